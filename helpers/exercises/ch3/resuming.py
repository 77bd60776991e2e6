"""Chapter 3 checkers, exercises 3-4: resume a run, the best model ready for inference.

>>> check_resume(resume)
[OK] start_epoch 2 (epochs done: 2, next epoch: 3); model, optimizer and scheduler restored; ...
"""

from __future__ import annotations

import copy
import inspect
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.checkpoint import save_checkpoint, strip_prefixes, unwrap_model
from helpers.exercises import ExerciseError, checker, passed, require
from helpers.exercises.common import (
    call_learner,
    read_weights_file,
    recorded_calls,
    same_device,
    same_state,
)
from helpers.i18n import N_, _

TODO_RESUME = (N_("Write resume(path, model, optimizer, scheduler): torch.load the file, load the "
                  "model, optimizer and scheduler state_dicts, return checkpoint['epoch'] + 1"))
TODO_INFERENCE = (N_("Build best_net: a TinyResNet like section 8's, load best.pt's 'model' entry "
                     "(map_location=settings.device), move it to settings.device, call .eval()"))


# Exercise 3 ------------------------------------------------------------------------------------

_RESUME_EPOCHS, _SAVED_EPOCH = 4, 1


def _resume_parts(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[1, 2], gamma=0.1)
    return model, optimizer, scheduler


def _resume_data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(32, 4, generator=generator), torch.randint(0, 3, (32,), generator=generator)


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    X, y = _resume_data()
    for start in range(0, len(y), 8):
        loss = nn.functional.cross_entropy(model(X[start:start + 8]), y[start:start + 8])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scheduler.step()


def _RESUME_HINT(exc: BaseException) -> str:  # noqa: N802
    if "Unexpected key(s)" in str(exc) and "\"model\"" in str(exc):
        return _(". The file is the whole checkpoint (keys model, optimizer, scheduler, epoch): "
                 "pass checkpoint['model'] to the model, checkpoint['optimizer'] to the optimizer, "
                 "and so on")
    return ""


@checker(todo=TODO_RESUME)
def check_resume(resume_fn: Callable[..., Any]) -> bool:
    """Exercise 3: ``resume_fn(path, model, optimizer, scheduler)`` restores all three and
    returns the epoch to start from.

    The checker trains a small reference run (AdamW, MultiStepLR) for 4 epochs, saving a
    checkpoint after the second (``epoch=1``, ``fit``'s 0-based index) with ``save_checkpoint``;
    then it gives ``resume_fn`` fresh objects, compares what came back and finishes the run
    from the returned epoch: the final weights must equal the uninterrupted run's.

    >>> check_resume(resume)
    [OK] start_epoch 2 (epochs done: 2, next epoch: 3); model, optimizer and scheduler restored; ...
    """
    with torch.random.fork_rng(devices=[]):  # leave the notebook's random state as it was
        return _check_resume(resume_fn)


def _check_resume(resume_fn: Callable[..., Any]) -> bool:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"
        model, optimizer, scheduler = _resume_parts(seed=0)
        for epoch in range(_RESUME_EPOCHS):
            _train_epoch(model, optimizer, scheduler)
            if epoch == _SAVED_EPOCH:
                save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler,
                                epoch=epoch)
                saved = copy.deepcopy({"model": model.state_dict(),
                                       "optimizer": optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict()})
        reference = model.state_dict()

        model, optimizer, scheduler = _resume_parts(seed=1)  # fresh objects, other initial weights
        with recorded_calls("torch.load") as loads:
            start_epoch = call_learner(resume_fn, path, model, optimizer, scheduler,
                                       what="resume(path, model, optimizer, scheduler)",
                                       hint=_RESUME_HINT)
    unsafe = [kwargs for _, kwargs in loads if kwargs.get("weights_only") is False]
    require(not unsafe,
            _("you call torch.load(..., weights_only=False): that unpickles whatever code the file "
              "holds, and a checkpoint from save_checkpoint needs none of it (tensors, numbers, dicts). "
              "Use torch.load(path, map_location='cpu', weights_only=True)"))
    resumes_at = _SAVED_EPOCH + 1
    require(isinstance(start_epoch, int) and not isinstance(start_epoch, bool),
            _("your function returned {start_epoch!r}; it should return the epoch to start from, an int "
              "({resumes_at} here)").format(start_epoch=start_epoch, resumes_at=resumes_at))
    require(start_epoch != _SAVED_EPOCH,
            _("your function returned {start_epoch}, the epoch stored in the checkpoint. That epoch "
              "had finished when it was saved, so training would repeat it: return "
              "checkpoint['epoch'] + 1").format(start_epoch=start_epoch))
    require(start_epoch == resumes_at,
            _("your function returned {start_epoch}; the checkpoint was saved with epoch={saved}, "
              "fit's 0-based index (epochs done: {done}, next epoch: {next}), so fit resumes at "
              "start_epoch {resumes_at} (checkpoint['epoch'] + 1)").format(
                start_epoch=start_epoch, saved=_SAVED_EPOCH, done=_SAVED_EPOCH + 1,
                next=_SAVED_EPOCH + 2, resumes_at=resumes_at))
    require(same_state(model.state_dict(), saved["model"]),
            _("the model's weights differ from the checkpoint's: load them with "
              "model.load_state_dict(checkpoint['model'])"))
    require(optimizer.state_dict()["state"],
            _("the optimizer has no state: AdamW's running averages and step counts were not restored, "
              "so the next steps would be taken as if training had just begun. Call "
              "optimizer.load_state_dict(checkpoint['optimizer'])"))
    require(same_state(optimizer.state_dict(), saved["optimizer"]),
            _("the optimizer's state differs from the checkpoint's; call "
              "optimizer.load_state_dict(checkpoint['optimizer']) after building it as before"))
    got_epoch, want_epoch = scheduler.state_dict()["last_epoch"], saved["scheduler"]["last_epoch"]
    require(same_state(scheduler.state_dict(), saved["scheduler"]),
            _("the scheduler was not restored: it counts last_epoch {got_epoch}, the checkpoint "
              "{want_epoch}, so the learning-rate schedule would start over. Call "
              "scheduler.load_state_dict(checkpoint['scheduler']) (the line the source article "
              "forgets)").format(got_epoch=got_epoch, want_epoch=want_epoch))
    for _epoch in range(start_epoch, _RESUME_EPOCHS):
        _train_epoch(model, optimizer, scheduler)
    require(same_state(model.state_dict(), reference),
            _("after resuming, the remaining epochs do not reproduce the uninterrupted run; does your "
              "function change anything after loading?"))
    return passed(_("start_epoch {start_epoch} (epochs done: {start_epoch}, next epoch: {next}); "
                    "model, optimizer and scheduler restored; epochs {next}-{last} of "
                    "{last} match the uninterrupted run bit for bit").format(
                      start_epoch=start_epoch, next=start_epoch + 1, last=_RESUME_EPOCHS))


# Exercise 4 ------------------------------------------------------------------------------------


def _weights_in(path: Path) -> Mapping[str, Tensor]:
    obj = read_weights_file(path)
    state = obj.get("model", obj) if isinstance(obj, Mapping) else obj
    require(isinstance(state, Mapping), _("{name} holds no state_dict").format(name=path.name))
    return strip_prefixes(state)


def _not_a_model(model: Any) -> None:
    if inspect.ismethod(model) and isinstance(model.__self__, nn.Module):
        raise ExerciseError(_("best_net is the method {model} of your model, not the model: the () are "
                              "missing. best_net = best_net.{model}()").format(model=model.__name__))
    if isinstance(model, Mapping):
        raise ExerciseError(_("best_net is a {type} (the checkpoint's contents, keys {keys}), not a "
                              "model: build a TinyResNet like section 8's and load best['model'] into "
                              "it").format(type=type(model).__name__, keys=list(model)[:4]))
    require(isinstance(model, nn.Module),
            _("best_net should be the model (an nn.Module), got {type}").format(type=type(model).__name__))


@checker(todo=TODO_INFERENCE)
def check_ready_for_inference(model: nn.Module, path: str | Path, device: torch.device | str) -> bool:
    """Exercise 4: ``model`` holds the weights of ``path``, sits on ``device`` and is in eval mode.

    ``path`` may be a weights file or a training checkpoint (weights under ``model``).

    >>> check_ready_for_inference(net, "runs/ch3/train/best.pt", settings.device)
    [OK] 40 tensors equal best.pt's; all on cpu; eval mode
    """
    path, device = Path(path), torch.device(device)
    _not_a_model(model)
    state = _weights_in(path)
    own = unwrap_model(model).state_dict()
    missing = [k for k in state if k not in own]
    require(not missing, _("the model has no {missing} although {name} has it: build the same "
                           "architecture as the one saved").format(missing=missing[:1], name=path.name))
    extra = [k for k in own if k not in state]
    require(not extra, _("your model has {n_extra} tensors that {name} lacks (e.g. {extra}): it is "
                         "another architecture, and they keep their random values. Build the TinyResNet "
                         "exactly like section 8's").format(
                           n_extra=len(extra), name=path.name, extra=extra[:1]))
    differ = [k for k, v in state.items() if not torch.equal(own[k].detach().cpu(), v.cpu())]
    if differ:
        sibling = path.with_name("last.pt")
        other = _weights_in(sibling) if sibling.is_file() and sibling != path else {}
        if other.keys() == state.keys() and all(
                torch.equal(own[k].detach().cpu(), v.cpu()) for k, v in other.items()):
            raise ExerciseError(_("your model holds the weights of last.pt, the last epoch; the "
                                  "exercise asks for {name}, the best epoch").format(name=path.name))
        raise ExerciseError(_("{n_differ} of {n_state} tensors differ from {name}'s (e.g. {differ}): "
                              "the weights were not loaded into this model. Call "
                              "best_net.load_state_dict(best['model'])").format(
                                n_differ=len(differ), n_state=len(state), name=path.name,
                                differ=differ[0]))
    elsewhere = sorted({str(t.device) for t in own.values()
                        if not same_device(t.device, device)})
    require(not elsewhere,
            _("some weights sit on {elsewhere}, not on {device}. map_location only decides where "
              "torch.load puts the tensors it reads; load_state_dict copies them into the model's own "
              "tensors, wherever the model is. Move the model with model.to(settings.device)").format(
                elsewhere=', '.join(elsewhere), device=device))
    training = [name or _("the model itself") for name, m in model.named_modules() if m.training]
    if training:
        raise ExerciseError(
            _("{count} modules are in training mode (e.g. {example}): dropout would drop features "
              "at random and batchnorm would use each batch's statistics. Call model.eval() before "
              "predicting").format(count=len(training), example=training[0]))
    return passed(_("{n_state} tensors equal {name}'s; all on {device}; eval mode").format(
                      n_state=len(state), name=path.name, device=device))

