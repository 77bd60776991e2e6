"""Checks that run before anything from a file is applied: tensors, optimizer, scheduler, epoch.

>>> _check_like(path, "scheduler", {"last_epoch": "x"}, scheduler.state_dict())  # doctest: +SKIP
CheckpointError: runs/last.pt: scheduler['last_epoch'] is 'x', not a number like 0 ...

A tampered or foreign checkpoint used to load and then fail on the first training step (or, for
a sparse tensor, half-way through ``load_state_dict``). Here every field is compared with the live
object it will go into (types, lengths, shapes, ranges) and the first mismatch raises one
``CheckpointError`` naming the field, while nothing has been changed yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from helpers.checkpoint.errors import _SHORT, CheckpointError
from helpers.i18n import N_, _

TAMPERED = N_("If the file was not written by save_checkpoint for these objects, or was edited, use "
            "another checkpoint.")
MAX_EPOCH = 2**31 - 1
# Lower bounds of the numbers optimizers and schedulers keep; a negative one is tampering.
_AT_LEAST = {"lr": 0, "initial_lr": 0, "max_lr": 0, "min_lr": 0, "weight_decay": 0, "eps": 0,
             "momentum": 0, "dampening": 0, "step": 0, "last_epoch": -1, "_step_count": 0,
             "total_steps": 1, "step_size": 1, "gamma": 0, "T_max": 0, "eta_min": 0}


def _fail(path: Path, field: str, what: str) -> CheckpointError:
    part = field.partition("[")[0]
    return CheckpointError(path, _("the {part} state does not fit: {field} {what}").format(
                                     part=part, field=field, what=what),
                           _("Build the {part} as when saving (same type, same parameters in the same "
                             "order and groups). {tampered}").format(part=part, tampered=_(TAMPERED)))


def tensor_problem(value: Any, own: Tensor | None = None) -> str | None:
    """Why ``value`` cannot be copied into the model's tensor ``own``, or None.

    >>> tensor_problem(torch.zeros(2).to_sparse())
    'is a sparse tensor (torch.sparse_coo); only dense (strided) tensors load'
    """
    if not isinstance(value, Tensor):
        return _("is a {type}, not a tensor").format(type=type(value).__name__)
    if value.layout != torch.strided:
        kind = "sparse" if "sparse" in str(value.layout) else "non-strided"
        return _("is a {kind} tensor ({layout}); only dense (strided) tensors load").format(
                   kind=kind, layout=value.layout)
    if value.is_quantized and not (own is not None and own.is_quantized):
        return _("is a quantized tensor ({dtype}); dequantize it before saving").format(dtype=value.dtype)
    if value.is_meta:
        return _("is a meta tensor: it has a shape but no values (saved from an unmaterialised model?)")
    if getattr(value, "is_nested", False):
        return _("is a nested tensor")
    if own is not None and not own.is_quantized:
        if value.is_complex() != own.is_complex() or (own.is_floating_point()
                                                      and not value.is_floating_point()):
            return _("has dtype {dtype}, but the model's tensor is {own_dtype}").format(
                       dtype=value.dtype, own_dtype=own.dtype)
    return None


def check_tensors(path: Path, state: Mapping[str, Any], own: Mapping[str, Tensor]) -> None:
    """Every tensor that would be copied into the model is a dense tensor of a fitting dtype."""
    for key, value in state.items():
        if key.endswith("_extra_state") or key not in own:
            continue
        problem = tensor_problem(value, own[key])
        if problem:
            raise CheckpointError(path, _("{key} {problem}").format(key=key, problem=problem),
                                  _("Nothing was loaded. Save the weights of a plain (dense, "
                                    "materialised) model with save_weights."))


def check_epoch(path: Path, epoch: Any) -> int:
    """The last finished epoch: a whole number from 0 to 2**31 - 1."""
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise CheckpointError(path, _("its epoch is {epoch}, not a whole number").format(
                                        epoch=_SHORT.repr(epoch)),
                              _("The file was not written by save_checkpoint or was edited; use another "
                                "checkpoint."))
    if not 0 <= epoch <= MAX_EPOCH:
        raise CheckpointError(path, _("its epoch is {epoch}, not from 0 to {MAX_EPOCH}").format(
                                        epoch=epoch, MAX_EPOCH=MAX_EPOCH),
                              _("The file was not written by save_checkpoint or was edited; use another "
                                "checkpoint."))
    return epoch


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _check_number(path: Path, field: str, key: Any, saved: Any, live: Any) -> None:
    if not _number(saved):
        raise _fail(path, field, _("is {saved}, not a number like {live!r}").format(
                                     saved=_SHORT.repr(saved), live=live))
    if math.isfinite(live) and not math.isfinite(saved):
        raise _fail(path, field, _("is {saved}, not a finite number").format(saved=saved))
    low = _AT_LEAST.get(key)
    if low is not None and saved < low:
        raise _fail(path, field, _("is {saved}, below {low}").format(saved=saved, low=low))


def _check_like(path: Path, field: str, saved: Any, live: Any, key: Any = None,
                extra_keys: bool = False) -> None:
    """``saved`` has the structure of ``live``: same kinds, lengths, tensor shapes, dict keys."""
    if isinstance(live, bool):
        if not isinstance(saved, bool):
            raise _fail(path, field, _("is {saved}, not True or False").format(saved=_SHORT.repr(saved)))
    elif _number(live):
        _check_number(path, field, key, saved, live)
    elif isinstance(live, str):
        if saved != live:
            raise _fail(path, field, _("is {saved}, but here it is {live!r}").format(
                                         saved=_SHORT.repr(saved), live=live))
    elif live is None:
        if not (saved is None or isinstance(saved, (bool, int, float, str))):
            raise _fail(path, field, _("is a {type}, not a plain value").format(type=type(saved).__name__))
    elif isinstance(live, Tensor):
        problem = tensor_problem(saved, live)
        if problem:
            raise _fail(path, field, problem)
        if saved.shape != live.shape:
            raise _fail(path, field, _("has shape {shape}, expected {shape2}").format(
                                         shape=list(saved.shape), shape2=list(live.shape)))
    elif isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(live):
            size = len(saved) if isinstance(saved, (list, tuple)) else type(saved).__name__
            raise _fail(path, field, _("is {size}, expected a list of {n_live}").format(
                                         size=size, n_live=len(live)))
        for i, (s, v) in enumerate(zip(saved, live, strict=True)):
            _check_like(path, f"{field}[{i}]", s, v, key)
    elif isinstance(live, Mapping):
        if not isinstance(saved, Mapping):
            raise _fail(path, field, _("is a {type}, not a dict").format(type=type(saved).__name__))
        for k, s in saved.items():
            if k in live:
                _check_like(path, f"{field}[{k!r}]", s, live[k], k)
            elif not extra_keys:
                raise _fail(path, field, _("has the unexpected field {k!r}").format(k=k))
            elif not (s is None or isinstance(s, (bool, str)) or (_number(s) and math.isfinite(s))):
                raise _fail(path, f"{field}[{k!r}]", _("is {s}, not a plain value").format(
                                                         s=_SHORT.repr(s)))


def _check_optimizer(path: Path, saved: Any, optimizer: Any) -> None:
    live = optimizer.state_dict()
    if not isinstance(saved, Mapping) or not {"state", "param_groups"} <= set(saved):
        raise _fail(path, "optimizer", _("is not an optimizer state_dict (state, param_groups)"))
    groups, live_groups = saved["param_groups"], live["param_groups"]
    if not isinstance(groups, (list, tuple)) or len(groups) != len(live_groups):
        raise _fail(path, "optimizer['param_groups']",
                    _("has {groups} groups, the optimizer {n_live_groups}").format(
                        groups=_SHORT.repr(groups), n_live_groups=len(live_groups)))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ids: list[Any] = []
    for i, (group, live_group) in enumerate(zip(groups, live_groups, strict=True)):
        field = f"optimizer['param_groups'][{i}]"
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), (list, tuple)):
            raise _fail(path, field, _("is not a parameter group with a params list"))
        if len(group["params"]) != len(live_group["params"]):
            raise _fail(path, field, _("has {saved} parameters, the optimizer's group {live}").format(
                saved=len(group["params"]), live=len(live_group["params"])))
        ids += list(group["params"])
        rest = {k: v for k, v in group.items() if k != "params"}
        _check_like(path, field, rest, {k: v for k, v in live_group.items() if k != "params"},
                    extra_keys=True)
    # torch.save: ints; DCP (get_state_dict, dcp_to_file): parameter names. Both load by position.
    kinds = {int if isinstance(i, int) and not isinstance(i, bool) else type(i) for i in ids}
    if not kinds <= {int} and kinds != {str} or len(set(ids)) != len(ids):
        raise _fail(path, "optimizer['param_groups']", _("has parameter ids that are not distinct whole "
                                                         "numbers or parameter names"))
    shape_of = {i: p for i, p in zip(ids, params, strict=True)}
    state = saved["state"]
    if not isinstance(state, Mapping):
        raise _fail(path, "optimizer['state']", _("is a {type}, not a dict").format(
                                                    type=type(state).__name__))
    for pid, entry in state.items():
        field = f"optimizer['state'][{pid!r}]"
        if pid not in shape_of or not isinstance(entry, Mapping):
            raise _fail(path, field, _("belongs to no parameter of the optimizer, or is not a dict"))
        param = shape_of[pid]
        for name, value in entry.items():
            where = f"{field}[{name!r}]"
            if isinstance(value, Tensor):
                problem = tensor_problem(value)
                if problem:
                    raise _fail(path, where, problem)
                scalar = value.numel() == 1 and value.dim() <= 1
                if not scalar and value.shape != param.shape:
                    raise _fail(path, where, _("has shape {shape}, but its parameter has {shape2}").format(
                                                 shape=list(value.shape), shape2=list(param.shape)))
                if not (value.is_floating_point() or scalar):
                    raise _fail(path, where, _("has dtype {dtype}, not a float dtype").format(
                                                 dtype=value.dtype))
            elif _number(value):
                _check_number(path, where, name, value, 0.0)
            elif value is not None:
                raise _fail(path, where, _("is a {type}, not a tensor or number").format(
                                             type=type(value).__name__))


def check_parts(path: Path, parts: list[tuple[str, Any, Any]]) -> None:
    """Compare each saved optimizer, scheduler and scaler state with the live object's own."""
    for name, target, saved in parts:
        if name == "optimizer" and isinstance(target, torch.optim.Optimizer):
            _check_optimizer(path, saved, target)
        elif hasattr(target, "state_dict"):
            live = target.state_dict()
            if live or saved:
                _check_like(path, name, saved, live)
        if name == "scheduler" and isinstance(saved, Mapping):
            last, total = saved.get("last_epoch"), saved.get("total_steps")
            if _number(last) and _number(total) and last > total:
                raise _fail(path, "scheduler['last_epoch']", _("is {last}, past total_steps {total}").format(
                                                                 last=last, total=total))


__all__ = ["check_epoch", "check_parts", "check_tensors", "tensor_problem"]
