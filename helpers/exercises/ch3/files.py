"""Chapter 3 checkers, exercises 1-2: save a wrapped model for inference, strip the prefix.

>>> check_prefix_stripper(strip_module_prefix)
[OK] 5 cases, 16 keys: 'module.' removed where it starts a key, every other key left alone
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.checkpoint import outputs_equal, unwrap_model
from helpers.exercises import ExerciseError, checker, passed, require
from helpers.exercises.common import (
    call_learner,
    first_line,
    read_weights_file,
    recorded_calls,
)
from helpers.i18n import N_, _

WRAPPER_PREFIXES = ("module.", "_orig_mod.")

TODO_SAVE = (N_("Write save_for_inference(model, path): save the state_dict of the model inside the "
                "wrapper (model.module.state_dict(), or unwrap_model(model).state_dict()) to path"))
TODO_STRIP = (N_("Write strip_module_prefix(state_dict): return a new dict in which only keys that "
                 "start with 'module.' lose it (key.removeprefix('module.')); other keys stay"))


# Exercise 1 ------------------------------------------------------------------------------------


def _judge_saved_object(saved: list[Any], model: nn.Module) -> None:
    """Name the mistake when what went to torch.save is not a state_dict."""
    for obj in saved:
        if inspect.ismethod(obj) and obj.__name__ == "state_dict":
            owner = "model.module" if obj.__self__ is unwrap_model(model) else "model"
            raise ExerciseError(_("you saved {owner}.state_dict, the method itself, not the dict it "
                                  "returns: call it, torch.save({owner}.state_dict(), path). The "
                                  "missing () made torch.save pickle the whole model behind the "
                                  "method").format(owner=owner))
        if isinstance(obj, nn.Module):
            inner = (_("the wrapper") if obj is model else
                     _("the whole {type}").format(type=type(obj).__name__))
            raise ExerciseError(_("you saved {inner} (a pickled nn.Module), not its weights: "
                                  "torch.load(weights_only=True) refuses such a file and it breaks when "
                                  "the code changes. Save the weights: "
                                  "torch.save(model.module.state_dict(), path)").format(inner=inner))
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Mapping) for v in obj.values()):
            raise ExerciseError(_("you saved a dict of dicts (keys {obj}) around the weights; a plain "
                                  "model's load_state_dict expects the state_dict itself: "
                                  "torch.save(model.module.state_dict(), path)").format(obj=list(obj)[:3]))


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
        call_learner(save_fn, model, path, what=_("your function on the wrapped model"))
    _judge_saved_object([args[0] for args, _ in saves if args], model)
    require(path.is_file(), _("your function did not write {name}; save to the path it gets as its "
                              "second argument").format(name=path.name))
    state = read_weights_file(path)
    require(isinstance(state, Mapping),
            _("{name} holds a {type}; for inference it should hold the state_dict, a dict of tensors").format(
                name=path.name, type=type(state).__name__))
    if any(key in state for key in ("optimizer", "epoch")) and not all(
            isinstance(v, Tensor) for v in state.values()):
        raise ExerciseError(_("{name} is a training checkpoint (keys: {keys}); for inference save only "
                              "the model's state_dict").format(
                                name=path.name, keys=', '.join(map(str, list(state)[:5]))))
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    require(not not_tensors, _("{name} holds values that are not tensors (e.g. {not_tensors}); save the "
                               "model's state_dict").format(name=path.name, not_tensors=not_tensors[:1]))
    for prefix in WRAPPER_PREFIXES:
        prefixed = [k for k in state if k.startswith(prefix)]
        require(not prefixed,
                _("{n_prefixed} of {n_state} keys start with {prefix!r} (e.g. {example!r}): that is the "
                  "wrapper's state_dict, and a plain model will not recognise these names. Save the "
                  "inner model's weights: unwrap_model(model).state_dict() (or "
                  "model.module.state_dict())").format(
                    n_prefixed=len(prefixed), n_state=len(state), prefix=prefix,
                    example=prefixed[:1][0] if prefixed else ""))
    plain = copy.deepcopy(unwrap_model(model))
    with torch.no_grad():
        for tensor in plain.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(0.5)  # so that only what the file holds can give the right outputs
    report = plain.load_state_dict(state, strict=False)
    missing, unexpected = list(report.missing_keys), list(report.unexpected_keys)
    require(not missing and not unexpected,
            _("a plain {type} does not load {name} strictly: {problems}. Save the whole state_dict "
              "of the model inside the wrapper").format(
                type=type(plain).__name__, name=path.name, problems=_("; ").join(part for part in (
                    _("{count} keys missing from the file (e.g. {keys})").format(
                        count=len(missing), keys=missing[:2]) if missing else "",
                    _("{count} keys the model does not have (e.g. {keys})").format(
                        count=len(unexpected), keys=unexpected[:2]) if unexpected else "") if part)))
    require(outputs_equal(unwrap_model(model), plain, example),
            _("a plain model loaded from the file gives different outputs than your model: did you save "
              "the weights of another model (a fresh one?) instead of this one?"))
    return passed(_("{n_state} tensors, no wrapper prefix; a plain {type} loads the file strictly and "
                    "gives the same outputs").format(n_state=len(state), type=type(plain).__name__))


# Exercise 2 ------------------------------------------------------------------------------------

_PREFIX_CASES: list[tuple[str, list[str], list[str]]] = [
    (N_("keys from a DataParallel/DDP model"),
     ["module.stem.0.weight", "module.blocks.0.conv.1.running_mean", "module.fc.weight",
      "module.fc.bias"],
     ["stem.0.weight", "blocks.0.conv.1.running_mean", "fc.weight", "fc.bias"]),
    (N_("keys without a prefix (a plain model)"),
     ["stem.0.weight", "fc.weight", "fc.bias"],
     ["stem.0.weight", "fc.weight", "fc.bias"]),
    (N_("keys that only look like a prefix"),
     ["modules.0.weight", "module_x.bias", "submodule.weight", "embed.weight",
      "encoder.module.weight"],
     ["modules.0.weight", "module_x.bias", "submodule.weight", "embed.weight",
      "encoder.module.weight"]),
    (N_("a nested module inside a wrapper"),
     ["module.encoder.module.weight"],
     ["encoder.module.weight"]),
    (N_("a mixed state_dict (an AveragedModel's: n_averaged next to module.*)"),
     ["n_averaged", "module.stem.0.weight", "module.fc.bias"],
     ["n_averaged", "stem.0.weight", "fc.bias"]),
]


def _why_mangled(key: str, got: str) -> str:
    if got == key and key.startswith("module."):
        return _(" It left the key as it was: strip every key that starts with 'module.', even "
                 "when other keys (n_averaged) do not")
    if got == key[7:]:
        return _(" It cut 7 characters off a key that does not start with 'module.'; test "
                 "key.startswith('module.') first, or use key.removeprefix('module.')")
    if got == key.replace("module.", ""):
        return _(" It removed 'module.' from inside the key; only 'module.' at the very start is "
                 "the wrapper's prefix")
    if got == key.lstrip("module."):
        return _(" str.lstrip('module.') removes any of the characters m, o, d, u, l, e and '.' "
                 "from the left, not the word; use key.removeprefix('module.')")
    if got == key.split(".", 1)[-1]:
        return _(" It cut everything up to the first dot, a prefix or not; only keys that start "
                 "with 'module.' lose it: key.removeprefix('module.')")
    if key.startswith("module") and got in (key[6:], key.removeprefix("module").lstrip("._")):
        return _(" It took 'module' without the dot for the prefix; test "
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
        case = _(case)
        state = OrderedDict((k, torch.full((1,), float(i))) for i, k in enumerate(keys))
        given = OrderedDict(state)
        try:
            result = strip_fn(given)
        except Exception as exc:
            raise ExerciseError(_("on {case} your function failed with {type}: {message}").format(
                                    case=case, type=type(exc).__name__, message=first_line(exc))) from None
        require(result is not None,
                _("your function returned None. If it changes the dict in place (as "
                  "consume_prefix_in_state_dict_if_present does), return the dict afterwards"))
        require(isinstance(result, Mapping),
                _("your function returned a {type}; return a dict").format(type=type(result).__name__))
        got_keys = list(result)
        if len(got_keys) != len(keys):
            raise ExerciseError(
                _("on {case} your function returned {n_got_keys} keys for {n_keys}: {got_keys}. "
                  "Expected {expected}. Keys that collide overwrite each other, and those weights are "
                  "lost").format(
                    case=case, n_got_keys=len(got_keys), n_keys=len(keys), got_keys=got_keys,
                    expected=expected))
        if set(got_keys) != set(expected):
            # Each input tensor holds its index, so a renamed key is found by its value.
            by_value = {float(v): k for k, v in result.items()
                        if isinstance(v, Tensor) and v.numel() == 1}
            for index, (key, want) in enumerate(zip(keys, expected, strict=True)):
                got = by_value.get(float(index), got_keys[index])
                if got != want:
                    raise ExerciseError(_("on {case} the key {key!r} came back as {got!r}; it should be "
                                          "{want!r}.{why_mangled}").format(
                                            case=case, key=key, got=got, want=want,
                                            why_mangled=_why_mangled(key, got)))
            raise ExerciseError(_("on {case} your function returned the keys {got_keys}; expected "
                                  "{expected}").format(case=case, got_keys=got_keys, expected=expected))
        for key, want in zip(keys, expected, strict=True):
            require(isinstance(result[want], Tensor) and torch.equal(result[want], state[key]),
                    _("on {case} the key {want!r} holds another value than {key!r} did; keep each "
                      "tensor with its key").format(case=case, want=want, key=key))
        total += len(keys)
    return passed(_("{cases} cases, {total} keys: 'module.' removed where it starts a key, "
                    "every other key left alone").format(cases=len(_PREFIX_CASES), total=total))
