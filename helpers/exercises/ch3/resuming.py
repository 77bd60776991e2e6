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

TODO_RESUME = ("Write resume(path, model, optimizer, scheduler): torch.load the file, load the "
               "model, optimizer and scheduler state_dicts, return checkpoint['epoch'] + 1")
TODO_INFERENCE = ("Build best_net: a TinyResNet like section 8's, load best.pt's 'model' entry "
                  "(map_location=settings.device), move it to settings.device, call .eval()")


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
        return (". The file is the whole checkpoint (keys model, optimizer, scheduler, epoch): "
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
            "you call torch.load(..., weights_only=False): that unpickles whatever code the file "
            "holds, and a checkpoint from save_checkpoint needs none of it (tensors, numbers, "
            "dicts). Use torch.load(path, map_location='cpu', weights_only=True)")
    resumes_at = _SAVED_EPOCH + 1
    require(isinstance(start_epoch, int) and not isinstance(start_epoch, bool),
            f"your function returned {start_epoch!r}; it should return the epoch to start "
            f"from, an int ({resumes_at} here)")
    require(start_epoch != _SAVED_EPOCH,
            f"your function returned {start_epoch}, the epoch stored in the checkpoint. That "
            f"epoch had finished when it was saved, so training would repeat it: return "
            f"checkpoint['epoch'] + 1")
    require(start_epoch == resumes_at,
            f"your function returned {start_epoch}; the checkpoint was saved with epoch="
            f"{_SAVED_EPOCH}, fit's 0-based index (epochs done: {_SAVED_EPOCH + 1}, next epoch: "
            f"{_SAVED_EPOCH + 2}), so fit resumes at start_epoch {resumes_at} "
            f"(checkpoint['epoch'] + 1)")
    require(same_state(model.state_dict(), saved["model"]),
            "the model's weights differ from the checkpoint's: load them with "
            "model.load_state_dict(checkpoint['model'])")
    require(optimizer.state_dict()["state"],
            "the optimizer has no state: AdamW's running averages and step counts were not "
            "restored, so the next steps would be taken as if training had just begun. Call "
            "optimizer.load_state_dict(checkpoint['optimizer'])")
    require(same_state(optimizer.state_dict(), saved["optimizer"]),
            "the optimizer's state differs from the checkpoint's; call "
            "optimizer.load_state_dict(checkpoint['optimizer']) after building it as before")
    got_epoch, want_epoch = scheduler.state_dict()["last_epoch"], saved["scheduler"]["last_epoch"]
    require(same_state(scheduler.state_dict(), saved["scheduler"]),
            f"the scheduler was not restored: it counts last_epoch {got_epoch}, the checkpoint "
            f"{want_epoch}, so the learning-rate schedule would start over. Call "
            f"scheduler.load_state_dict(checkpoint['scheduler']) (the line the source article "
            f"forgets)")
    for _ in range(start_epoch, _RESUME_EPOCHS):
        _train_epoch(model, optimizer, scheduler)
    require(same_state(model.state_dict(), reference),
            "after resuming, the remaining epochs do not reproduce the uninterrupted run; does "
            "your function change anything after loading?")
    return passed(f"start_epoch {start_epoch} (epochs done: {start_epoch}, next epoch: "
                  f"{start_epoch + 1}); model, optimizer and scheduler restored; epochs "
                  f"{start_epoch + 1}-{_RESUME_EPOCHS} of {_RESUME_EPOCHS} match the uninterrupted "
                  f"run bit for bit")


# Exercise 4 ------------------------------------------------------------------------------------


def _weights_in(path: Path) -> Mapping[str, Tensor]:
    obj = read_weights_file(path)
    state = obj.get("model", obj) if isinstance(obj, Mapping) else obj
    require(isinstance(state, Mapping), f"{path.name} holds no state_dict")
    return strip_prefixes(state)


def _not_a_model(model: Any) -> None:
    if inspect.ismethod(model) and isinstance(model.__self__, nn.Module):
        raise ExerciseError(f"best_net is the method {model.__name__} of your model, not the "
                            f"model: the () are missing. best_net = best_net.{model.__name__}()")
    if isinstance(model, Mapping):
        raise ExerciseError(f"best_net is a {type(model).__name__} (the checkpoint's contents, keys "
                            f"{list(model)[:4]}), not a model: build a TinyResNet like section 8's "
                            f"and load best['model'] into it")
    require(isinstance(model, nn.Module), f"best_net should be the model (an nn.Module), got "
                                          f"{type(model).__name__}")


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
    require(not missing, f"the model has no {missing[:1]} although {path.name} has it: build the "
                         f"same architecture as the one saved")
    extra = [k for k in own if k not in state]
    require(not extra, f"your model has {len(extra)} tensors that {path.name} lacks (e.g. "
                       f"{extra[:1]}): it is another architecture, and they keep their random "
                       f"values. Build the TinyResNet exactly like section 8's")
    differ = [k for k, v in state.items() if not torch.equal(own[k].detach().cpu(), v.cpu())]
    if differ:
        sibling = path.with_name("last.pt")
        other = _weights_in(sibling) if sibling.is_file() and sibling != path else {}
        if other.keys() == state.keys() and all(
                torch.equal(own[k].detach().cpu(), v.cpu()) for k, v in other.items()):
            raise ExerciseError(f"your model holds the weights of last.pt, the last epoch; the "
                                f"exercise asks for {path.name}, the best epoch")
        raise ExerciseError(f"{len(differ)} of {len(state)} tensors differ from {path.name}'s "
                            f"(e.g. {differ[0]}): the weights were not loaded into this model. "
                            f"Call best_net.load_state_dict(best['model'])")
    elsewhere = sorted({str(t.device) for t in own.values()
                        if not same_device(t.device, device)})
    require(not elsewhere,
            f"some weights sit on {', '.join(elsewhere)}, not on {device}. map_location only "
            f"decides where torch.load puts the tensors it reads; load_state_dict copies them "
            f"into the model's own tensors, wherever the model is. Move the model with "
            f"model.to(settings.device)")
    training = [name or "the model itself" for name, m in model.named_modules() if m.training]
    if training:
        raise ExerciseError(
            f"{len(training)} modules are in training mode (e.g. {training[0]}): dropout would "
            f"drop features at random and batchnorm would use each batch's statistics. Call "
            f"model.eval() before predicting")
    return passed(f"{len(state)} tensors equal {path.name}'s; all on {device}; eval mode")

