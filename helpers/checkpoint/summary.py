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

from helpers.checkpoint.errors import _SHORT, RESERVED_KEYS, WEIGHT_KEYS, PathLike
from helpers.checkpoint.reading import _ZIP_MAGIC, _existing, _is_safetensors, _is_state_dict, _read
from helpers.checkpoint.weights import _short_list


def _human_size(size: float) -> str:
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def _tensors_in(obj: Any) -> list[Tensor]:
    found: dict[int, Tensor] = {}

    def walk(value: Any) -> None:
        if isinstance(value, Tensor):
            found.setdefault(id(value), value)
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(obj)
    return list(found.values())


def checkpoint_summary(path: PathLike) -> str:
    """A short, human-readable description of a weights or checkpoint file (loads it safely).

    >>> print(checkpoint_summary("runs/last.pt"))  # doctest: +SKIP
    last.pt: training checkpoint (helpers.checkpoint/1), 1.2 MiB on disk
    ...
    """
    path = _existing(path)
    obj = _read(path)
    size = _human_size(path.stat().st_size)
    with open(path, "rb") as f:
        head = f.read(16)
    container = ("safetensors" if _is_safetensors(path, head) else
                 "torch.save zip" if head.startswith(_ZIP_MAGIC) else "torch.save legacy")
    tensors = _tensors_in(obj)
    values = sum(t.numel() for t in tensors)
    if _is_state_dict(obj):
        keys = list(obj)
        return "\n".join([
            f"{path.name}: weights (a state_dict), {size} on disk ({container})",
            f"tensors: {len(keys)}, {values:,} values",
            f"first keys: {_short_list(keys, 3)}"])
    if not isinstance(obj, Mapping):
        return f"{path.name}: a {type(obj).__name__}, {size} on disk ({container})"
    is_checkpoint = "epoch" in obj and any(_is_state_dict(obj.get(k)) for k in WEIGHT_KEYS)
    kind = (f"training checkpoint ({obj.get('format', 'foreign format')})" if is_checkpoint
            else "dict")
    lines = [f"{path.name}: {kind}, {size} on disk ({container})",
             f"keys: {', '.join(map(str, obj))}"]
    if "epoch" in obj:
        lines.append(f"epoch: {obj['epoch']} (resumes at start_epoch {int(obj['epoch']) + 1})")
    weights_key = next((k for k in WEIGHT_KEYS if _is_state_dict(obj.get(k))), None)
    if weights_key is not None:
        weights = obj[weights_key]
        lines.append(f"{weights_key}: {len(weights)} tensors, "
                     f"{sum(t.numel() for t in weights.values()):,} values, "
                     f"first keys: {_short_list(list(weights), 3)}")
    optimizer = obj.get("optimizer", obj.get("optimizer_state_dict"))
    if isinstance(optimizer, Mapping):
        groups = optimizer.get("param_groups", [])
        lr = groups[0].get("lr") if groups else None
        lines.append(f"optimizer: state for {len(optimizer.get('state', {}))} parameters, "
                     f"{len(groups)} param group(s), lr {lr}")
    if isinstance(obj.get("scheduler"), Mapping):
        lines.append(f"scheduler: last_epoch {obj['scheduler'].get('last_epoch')}")
    if isinstance(obj.get("scaler"), Mapping):
        scale = obj["scaler"].get("scale")
        lines.append(f"scaler: scale {scale}" if scale is not None else "scaler: disabled")
    if isinstance(obj.get("rng"), Mapping):
        lines.append(f"rng: {', '.join(obj['rng'])}")
    known = RESERVED_KEYS | set(WEIGHT_KEYS) | {"optimizer_state_dict"}
    extras = [f"{k}={_SHORT.repr(v)}" for k, v in obj.items() if k not in known]
    if extras:
        lines.append(f"extras: {', '.join(extras)}")
    lines.append(f"tensors in file: {len(tensors)}, {values:,} values")
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
