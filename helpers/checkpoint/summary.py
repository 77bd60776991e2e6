"""Looking at files and models: a readable summary, bit-exact comparisons.

>>> state_dicts_equal(model.state_dict(), copy.deepcopy(model).state_dict())
True
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from helpers.checkpoint.atomic import _size
from helpers.checkpoint.errors import _SHORT, RESERVED_KEYS, WEIGHT_KEYS, PathLike
from helpers.checkpoint.reading import _ZIP_MAGIC, _existing, _head, _is_safetensors, _is_state_dict, _read
from helpers.checkpoint.weights import _short_list
from helpers.i18n import _, ngettext
from helpers.report import MARK, measured

_WALK_LIMIT = 1_000_000  # entries visited at most: a crafted file cannot make a summary run forever
_FACT_KEYS = ("config", "hparams", "hyperparameters", "args")  # set by hand, not measured
_SCHEDULE_KEYS = ("lr", "learning_rate", "momentum", "betas", "weight_decay", "initial_lr",
                  "max_lr", "min_lr")


def _tensors_in(obj: Any) -> tuple[list[Tensor], bool]:
    """The distinct tensors in nested dicts, lists and tuples, walked without recursion (any
    depth) and bounded (``_WALK_LIMIT`` entries); the flag says the walk stopped early."""
    found: dict[int, Tensor] = {}
    stack, visited = [obj], 0
    while stack:
        visited += 1
        if visited > _WALK_LIMIT:
            return list(found.values()), True
        value = stack.pop()
        if isinstance(value, Tensor):
            found.setdefault(id(value), value)
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return list(found.values()), False


def _is_schedule(key: Any) -> bool:
    return isinstance(key, str) and any(key == k or key.endswith("_" + k) for k in _SCHEDULE_KEYS)


def _number(value: Any, schedule: bool) -> str:
    """An int exactly; a schedule value (lr, momentum) to 3 significant digits; any other float is
    a measurement (it comes out of training) and is printed through ``helpers.report.measured``."""
    if isinstance(value, (bool, int)):
        return str(value)
    return f"{value:.3g}" if schedule else measured(value)


def _shown(value: Any, key: Any = None, depth: int = 0, fact: bool = False) -> str:
    """A short, rounded description of an extra for ``checkpoint_summary`` (bounded in depth and
    length, so a crafted file cannot make it long or slow). Floats under a schedule key (``lr``)
    or in a config are facts (3 significant digits); other floats are measurements (``≈``)."""
    fact = fact or key in _FACT_KEYS
    schedule = fact or _is_schedule(key)
    if isinstance(value, (bool, int, float)):
        return _number(value, schedule)
    if isinstance(value, Tensor):
        return f"tensor(shape {list(value.shape)}, {str(value.dtype).replace('torch.', '')})"
    if isinstance(value, (list, tuple)) and depth < 3:
        items = list(itertools.islice(value, 5))
        more = ", ..." if len(value) > 4 else ""
        floats = items and all(isinstance(v, float) for v in items)
        if floats and not schedule:  # one mark for the whole list: sanitize.cfg masks it at once
            return measured(items[:4])[:-1] + more + "]"
        inner = ", ".join(_shown(v, key, depth + 1, fact) for v in items[:4]) + more
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, Mapping) and depth < 3:
        items = list(itertools.islice(value.items(), 5))
        inner = ", ".join(f"{_SHORT.repr(k)}: {_shown(v, k, depth + 1, fact)}" for k, v in items[:4])
        return "{" + inner + (", ..." if len(value) > 4 else "") + "}"
    return _SHORT.repr(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _times(count: int) -> str:
    return ngettext("once", "{count} times", count).format(count=count)


def _epoch_line(epoch: Any) -> str:
    """Epochs counted from 1, for people: the file stores ``fit``'s 0-based index of the last
    finished epoch, so ``epoch`` 2 means 3 epochs done and the next one is epoch 4."""
    if _whole(epoch):
        return _("epochs done: {done}, next epoch: {next}").format(done=epoch + 1, next=epoch + 2)
    return _("epoch: {epoch} (not a whole number from 0: cannot resume)").format(
        epoch=_SHORT.repr(epoch))


def checkpoint_summary(path: PathLike) -> str:
    """A short, human-readable description of a weights or checkpoint file (loads it safely).

    Epochs are counted from 1 (``epochs done: 3, next epoch: 4`` for a file saved with
    ``epoch=2``, fit's 0-based index); the scheduler line gives its own step count
    (``last_epoch``), which counts ``scheduler.step()`` calls, per epoch or per batch.

    >>> print(checkpoint_summary("runs/last.pt"))  # doctest: +SKIP
    last.pt: training checkpoint (helpers.checkpoint/1), ≈1.2 MiB on disk (torch.save zip)
    ...
    """
    path = _existing(path)
    obj = _read(path)
    # torch's zip layout (alignment, record order) changes between versions, so a file's size is
    # marked like a measurement: the same checkpoint is 54.8 KiB under torch 2.6, 55.1 under 2.14
    size = MARK + _size(path.stat().st_size)
    head = _head(path)
    container = ("safetensors" if _is_safetensors(path, head) else
                 "torch.save zip" if head.startswith(_ZIP_MAGIC) else "torch.save legacy")
    tensors, cut = _tensors_in(obj)
    values = sum(t.numel() for t in tensors)
    if _is_state_dict(obj):
        keys = list(obj)
        return "\n".join([
            _("{name}: weights (a state_dict), {size} on disk ({container})").format(
                name=path.name, size=size, container=container),
            _("tensors: {count}, {values:,} values").format(count=len(keys), values=values),
            _("first keys: {keys}").format(keys=_short_list(keys, 3))])
    if not isinstance(obj, Mapping):
        return _("{name}: a {type}, {size} on disk ({container})").format(
            name=path.name, type=type(obj).__name__, size=size, container=container)
    is_checkpoint = "epoch" in obj and any(_is_state_dict(obj.get(k)) for k in WEIGHT_KEYS)
    kind = (_("training checkpoint ({format})").format(format=obj.get("format", _("foreign format")))
            if is_checkpoint else "dict")
    more = _(", ... ({count} more)").format(count=len(obj) - 12) if len(obj) > 12 else ""
    lines = [_("{name}: {kind}, {size} on disk ({container})").format(
                 name=path.name, kind=kind, size=size, container=container),
             _("keys: {keys}").format(keys=", ".join(map(str, itertools.islice(obj, 12)))) + more]
    if "epoch" in obj:
        lines.append(_epoch_line(obj["epoch"]))
    weights_key = next((k for k in WEIGHT_KEYS if _is_state_dict(obj.get(k))), None)
    if weights_key is not None:
        weights = obj[weights_key]
        lines.append(_("{key}: {count} tensors, {values:,} values, first keys: {keys}").format(
            key=weights_key, count=len(weights), values=sum(t.numel() for t in weights.values()),
            keys=_short_list(list(weights), 3)))
    optimizer = obj.get("optimizer", obj.get("optimizer_state_dict"))
    if isinstance(optimizer, Mapping):
        groups = optimizer.get("param_groups", [])
        lr = groups[0].get("lr") if groups and isinstance(groups[0], Mapping) else None
        lr = f"{lr:.3g}" if isinstance(lr, float) else _SHORT.repr(lr)
        lines.append(_("optimizer: state for {count} parameters, {groups} param group(s), lr {lr}").format(
            count=len(optimizer.get("state", {})), groups=len(groups), lr=lr))
    if isinstance(obj.get("scheduler"), Mapping):
        steps = obj["scheduler"].get("last_epoch")
        lines.append(_("scheduler: stepped {times} (its last_epoch)").format(times=_times(steps))
                     if _whole(steps) else
                     _("scheduler: last_epoch {steps}").format(steps=_SHORT.repr(steps)))
    if isinstance(obj.get("scaler"), Mapping):
        scale = obj["scaler"].get("scale")
        lines.append(_("scaler: scale {scale}").format(scale=scale) if scale is not None
                     else _("scaler: disabled"))
    if isinstance(obj.get("rng"), Mapping):
        lines.append(_("rng: {states}").format(states=", ".join(obj["rng"])))
    known = RESERVED_KEYS | set(WEIGHT_KEYS) | {"optimizer_state_dict"}
    extras = [f"{k}={_shown(v, k)}" for k, v in itertools.islice(obj.items(), 40) if k not in known]
    if extras:
        lines.append(_("extras: {extras}").format(extras=", ".join(extras)))
    cut_note = _(" (stopped counting after {limit:,} entries)").format(limit=_WALK_LIMIT) if cut else ""
    lines.append(_("tensors in file: {count}, {values:,} values").format(count=len(tensors), values=values)
                 + cut_note)
    return "\n".join(lines)


def _device_of(model: nn.Module) -> torch.device:
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return False
    return bool(a == b)


def state_dicts_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when both have the same keys and every tensor is bit-identical (``torch.equal``).

    >>> state_dicts_equal(model.state_dict(), copy.deepcopy(model).state_dict())
    True
    """
    return _same(dict(a), dict(b))


def outputs_equal(model_a: nn.Module, model_b: nn.Module, x: Tensor) -> bool:
    """True when both models give exactly equal outputs on ``x`` (eval mode, no autograd).

    Each model gets ``x`` on its own device; tuple, list and dict outputs are compared element by
    element. The training/eval mode of every submodule is restored afterwards.

    >>> outputs_equal(model, reloaded, data.val.X[:8])
    True
    """
    modes = [(m, m.training) for model in (model_a, model_b) for m in model.modules()]
    try:
        model_a.eval()
        model_b.eval()
        with torch.inference_mode():
            out_a = model_a(x.to(_device_of(model_a)))
            out_b = model_b(x.to(_device_of(model_b)))
        return _same(out_a, out_b)
    finally:
        for module, mode in modes:
            module.training = mode
