"""Checkers for chapter 3, saving and loading (``notebooks/03_saving_and_loading.ipynb``).

>>> check_prefix_stripper(None)
[TODO] Write strip_module_prefix(state_dict): return a new dict in which only keys that ...
>>> check_prefix_stripper(strip_module_prefix)
[OK] 4 cases, 13 keys: 'module.' removed where it starts a key, every other key left alone

Each checker prints one line, ``[TODO]``, ``[TRY AGAIN]`` or ``[OK]``, and never raises; the strict
version (raises ``ExerciseError``, returns True) is ``check_x.__wrapped__``. ``solution(n)``
shows the answer to exercise ``n``.
"""

from __future__ import annotations

import copy
import inspect
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.checkpoint import outputs_equal, save_checkpoint, strip_prefixes, unwrap_model
from helpers.exercises import ExerciseError, checker, passed, require, solution_lookup
from helpers.exercises.common import (
    call_learner,
    first_line,
    read_weights_file,
    recorded_calls,
    same_device,
    same_state,
)
from helpers.exercises.solutions import CH3 as SOLUTIONS

WRAPPER_PREFIXES = ("module.", "_orig_mod.")

TODO_SAVE = ("Write save_for_inference(model, path): save the state_dict of the model inside the "
             "wrapper (model.module.state_dict(), or unwrap_model(model).state_dict()) to path")
TODO_STRIP = ("Write strip_module_prefix(state_dict): return a new dict in which only keys that "
              "start with 'module.' lose it (key.removeprefix('module.')); other keys stay")
TODO_RESUME = ("Write resume(path, model, optimizer, scheduler): torch.load the file, load the "
               "model, optimizer and scheduler state_dicts, return checkpoint['epoch'] + 1")
TODO_INFERENCE = ("Build best_net: a TinyResNet like section 8's, load best.pt's 'model' entry "
                  "(map_location=settings.device), move it to settings.device, call .eval()")


# Exercise 1 ------------------------------------------------------------------------------------


def _judge_saved_object(saved: list[Any], model: nn.Module) -> None:
    """Name the mistake when what went to torch.save is not a state_dict."""
    for obj in saved:
        if inspect.ismethod(obj) and obj.__name__ == "state_dict":
            owner = "model.module" if obj.__self__ is unwrap_model(model) else "model"
            raise ExerciseError(f"you saved {owner}.state_dict, the method itself, not the "
                                f"dict it returns: call it, torch.save({owner}.state_dict(), "
                                f"path). The missing () made torch.save pickle the whole model "
                                f"behind the method")
        if isinstance(obj, nn.Module):
            inner = "the wrapper" if obj is model else f"the whole {type(obj).__name__}"
            raise ExerciseError(f"you saved {inner} (a pickled nn.Module), not its weights: "
                                f"torch.load(weights_only=True) refuses such a file and it "
                                f"breaks when the code changes. Save the weights: "
                                f"torch.save(model.module.state_dict(), path)")
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Mapping) for v in obj.values()):
            raise ExerciseError(f"you saved a dict of dicts (keys {list(obj)[:3]}) around the "
                                f"weights; a plain model's load_state_dict expects the "
                                f"state_dict itself: torch.save(model.module.state_dict(), path)")


@checker(todo=TODO_SAVE)
def check_save_for_inference(save_fn: Callable[[nn.Module, Path], Any], model: nn.Module,
                             example: Tensor, path: str | Path) -> bool:
    """Exercise 1: ``save_fn(model, path)`` writes weights that a plain model loads strictly.

    ``model`` is wrapped (``nn.DataParallel``, DDP or ``torch.compile``). The checker calls
    ``save_fn``, reads the file with ``weights_only=True``, looks for wrapper prefixes, loads it
    with ``strict=True`` into a scrambled copy of the plain model and compares outputs on
    ``example``.

    >>> check_save_for_inference(save_for_inference, nn.DataParallel(net), x, "runs/w.pt")
    [OK] 40 tensors, no wrapper prefix; a plain TinyResNet loads the file strictly and ...
    """
    path = Path(path)
    path.unlink(missing_ok=True)
    with recorded_calls("torch.save") as saves:
        call_learner(save_fn, model, path, what="your function on the wrapped model")
    _judge_saved_object([args[0] for args, _ in saves if args], model)
    require(path.is_file(), f"your function did not write {path.name}; save to the path it gets "
                            f"as its second argument")
    state = read_weights_file(path)
    require(isinstance(state, Mapping),
            f"{path.name} holds a {type(state).__name__}; for inference it should hold the "
            f"state_dict, a dict of tensors")
    if any(key in state for key in ("optimizer", "epoch")) and not all(
            isinstance(v, Tensor) for v in state.values()):
        raise ExerciseError(f"{path.name} is a training checkpoint (keys: "
                            f"{', '.join(map(str, list(state)[:5]))}); for inference save only "
                            f"the model's state_dict")
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    require(not not_tensors, f"{path.name} holds values that are not tensors (e.g. "
                             f"{not_tensors[:1]}); save the model's state_dict")
    for prefix in WRAPPER_PREFIXES:
        prefixed = [k for k in state if k.startswith(prefix)]
        require(not prefixed,
                f"{len(prefixed)} of {len(state)} keys start with {prefix!r} (e.g. "
                f"{prefixed[:1][0] if prefixed else ''!r}): that is the wrapper's state_dict, "
                f"and a plain model will not recognise these names. Save the inner model's "
                f"weights: unwrap_model(model).state_dict() (or model.module.state_dict())")
    plain = copy.deepcopy(unwrap_model(model))
    with torch.no_grad():
        for tensor in plain.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(0.5)  # so that only what the file holds can give the right outputs
    report = plain.load_state_dict(state, strict=False)
    missing, unexpected = list(report.missing_keys), list(report.unexpected_keys)
    require(not missing and not unexpected,
            f"a plain {type(plain).__name__} does not load {path.name} strictly: "
            + "; ".join(part for part in (
                f"{len(missing)} keys missing from the file (e.g. {missing[:2]})" if missing
                else "", f"{len(unexpected)} keys the model does not have (e.g. "
                         f"{unexpected[:2]})" if unexpected else "") if part)
            + ". Save the whole state_dict of the model inside the wrapper")
    require(outputs_equal(unwrap_model(model), plain, example),
            "a plain model loaded from the file gives different outputs than your model: did "
            "you save the weights of another model (a fresh one?) instead of this one?")
    return passed(f"{len(state)} tensors, no wrapper prefix; a plain {type(plain).__name__} "
                  f"loads the file strictly and gives the same outputs")


# Exercise 2 ------------------------------------------------------------------------------------

_PREFIX_CASES: list[tuple[str, list[str], list[str]]] = [
    ("keys from a DataParallel/DDP model",
     ["module.stem.0.weight", "module.blocks.0.conv.1.running_mean", "module.fc.weight",
      "module.fc.bias"],
     ["stem.0.weight", "blocks.0.conv.1.running_mean", "fc.weight", "fc.bias"]),
    ("keys without a prefix (a plain model)",
     ["stem.0.weight", "fc.weight", "fc.bias"],
     ["stem.0.weight", "fc.weight", "fc.bias"]),
    ("keys that only look like a prefix",
     ["modules.0.weight", "module_x.bias", "submodule.weight", "embed.weight",
      "encoder.module.weight"],
     ["modules.0.weight", "module_x.bias", "submodule.weight", "embed.weight",
      "encoder.module.weight"]),
    ("a nested module inside a wrapper",
     ["module.encoder.module.weight"],
     ["encoder.module.weight"]),
    ("a mixed state_dict (an AveragedModel's: n_averaged next to module.*)",
     ["n_averaged", "module.stem.0.weight", "module.fc.bias"],
     ["n_averaged", "stem.0.weight", "fc.bias"]),
]


def _why_mangled(key: str, got: str) -> str:
    if got == key and key.startswith("module."):
        return (" It left the key as it was: strip every key that starts with 'module.', even "
                "when other keys (n_averaged) do not")
    if got == key[7:]:
        return (" It cut 7 characters off a key that does not start with 'module.'; test "
                "key.startswith('module.') first, or use key.removeprefix('module.')")
    if got == key.replace("module.", ""):
        return (" It removed 'module.' from inside the key; only 'module.' at the very start is "
                "the wrapper's prefix")
    if got == key.lstrip("module."):
        return (" str.lstrip('module.') removes any of the characters m, o, d, u, l, e and '.' "
                "from the left, not the word; use key.removeprefix('module.')")
    if got == key.split(".", 1)[-1]:
        return (" It cut everything up to the first dot, a prefix or not; only keys that start "
                "with 'module.' lose it: key.removeprefix('module.')")
    if key.startswith("module") and got in (key[6:], key.removeprefix("module").lstrip("._")):
        return (" It took 'module' without the dot for the prefix; test "
                "key.startswith('module.') (with the dot): module_x is a layer's own name")
    return ""


@checker(todo=TODO_STRIP)
def check_prefix_stripper(strip_fn: Callable[[dict[str, Tensor]], Any]) -> bool:
    """Exercise 2: ``strip_fn(state_dict)`` returns a dict without the leading ``module.``.

    It runs ``strip_fn`` on prefixed keys, plain keys and keys that only resemble the prefix
    (``modules.0.weight``, ``module_x.bias``, ``submodule.weight``, ``encoder.module.weight``),
    and names the first key that comes back wrong.

    >>> check_prefix_stripper(lambda sd: strip_prefixes(sd, ["module."]))
    [OK] 4 cases, 13 keys: 'module.' removed where it starts a key, every other key left alone
    """
    total = 0
    for case, keys, expected in _PREFIX_CASES:
        state = OrderedDict((k, torch.full((1,), float(i))) for i, k in enumerate(keys))
        given = OrderedDict(state)
        try:
            result = strip_fn(given)
        except Exception as exc:
            raise ExerciseError(f"on {case} your function failed with {type(exc).__name__}: "
                                f"{first_line(exc)}") from None
        require(result is not None,
                "your function returned None. If it changes the dict in place (as "
                "consume_prefix_in_state_dict_if_present does), return the dict afterwards")
        require(isinstance(result, Mapping),
                f"your function returned a {type(result).__name__}; return a dict")
        got_keys = list(result)
        if len(got_keys) != len(keys):
            raise ExerciseError(
                f"on {case} your function returned {len(got_keys)} keys for {len(keys)}: "
                f"{got_keys}. Expected {expected}. Keys that collide overwrite each other, and "
                f"those weights are lost")
        if set(got_keys) != set(expected):
            # Each input tensor holds its index, so a renamed key is found by its value.
            by_value = {float(v): k for k, v in result.items()
                        if isinstance(v, Tensor) and v.numel() == 1}
            for index, (key, want) in enumerate(zip(keys, expected, strict=True)):
                got = by_value.get(float(index), got_keys[index])
                if got != want:
                    raise ExerciseError(f"on {case} the key {key!r} came back as {got!r}; it "
                                        f"should be {want!r}.{_why_mangled(key, got)}")
            raise ExerciseError(f"on {case} your function returned the keys {got_keys}; "
                                f"expected {expected}")
        for key, want in zip(keys, expected, strict=True):
            require(isinstance(result[want], Tensor) and torch.equal(result[want], state[key]),
                    f"on {case} the key {want!r} holds another value than {key!r} did; keep "
                    f"each tensor with its key")
        total += len(keys)
    return passed(f"{len(_PREFIX_CASES)} cases, {total} keys: 'module.' removed where it starts "
                  f"a key, every other key left alone")


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
    checkpoint after the second (epoch index 1, as ``fit`` counts) with ``save_checkpoint``;
    then it gives ``resume_fn`` fresh objects, compares what came back and finishes the run
    from the returned epoch: the final weights must equal the uninterrupted run's.

    >>> check_resume(resume)
    [OK] start_epoch 2; model, optimizer and scheduler restored; epochs 3-4 of 4 match ...
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
            f"your function returned {start_epoch}; the checkpoint holds epoch index "
            f"{_SAVED_EPOCH} (epoch {_SAVED_EPOCH + 1} counted from 1), so training resumes at "
            f"start_epoch {resumes_at} (checkpoint['epoch'] + 1)")
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
            f"scheduler.load_state_dict(checkpoint['scheduler']) (the line the seed article "
            f"forgets)")
    for _ in range(start_epoch, _RESUME_EPOCHS):
        _train_epoch(model, optimizer, scheduler)
    require(same_state(model.state_dict(), reference),
            "after resuming, the remaining epochs do not reproduce the uninterrupted run; does "
            "your function change anything after loading?")
    return passed(f"start_epoch {start_epoch}; model, optimizer and scheduler restored; epochs "
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


solution = solution_lookup(3, SOLUTIONS)
