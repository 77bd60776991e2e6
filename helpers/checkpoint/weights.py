"""Weights: save a model's state_dict (torch.save or safetensors), load it with checked keys.

>>> save_weights(model, "runs/net.safetensors")
PosixPath('runs/net.safetensors')
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.checkpoint.atomic import _atomic_write
from helpers.checkpoint.errors import CheckpointError, IncompatibleKeys, PathLike
from helpers.checkpoint.prefixes import strip_prefixes, unwrap_model
from helpers.checkpoint.reading import _existing, _find_weights, _is_state_dict, _read
from helpers.checkpoint.storable import _check_storable
from helpers.checkpoint.validate import check_tensors
from helpers.i18n import _


def _short_list(keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _excluded(key: str, exclude: Iterable[str]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in exclude)


def _plan_state(model: nn.Module, state: Mapping[str, Tensor], path: Path, *, strict: bool = True,
                exclude: Iterable[str] = ()) -> Mapping[str, Tensor]:
    """Match keys (stripping wrapper prefixes if that helps) and check shapes and, when ``strict``,
    that every key matches; raises before anything is loaded. Returns the state_dict to load."""
    own = unwrap_model(model).state_dict()
    if not set(state) <= set(own):
        try:
            stripped = strip_prefixes(state)
        except ValueError as exc:
            raise CheckpointError(path, str(exc), _("Save the weights from one model.")) from None
        if len(set(stripped) & set(own)) > len(set(state) & set(own)):
            state = stripped
    exclude = list(exclude)
    if exclude:
        kept = OrderedDict((k, v) for k, v in state.items() if not _excluded(k, exclude))
        if hasattr(state, "_metadata"):  # module versions, e.g. for BatchNorm
            kept._metadata = state._metadata  # type: ignore[attr-defined]
        state = kept
    mismatched = [(k, v, own[k]) for k, v in state.items() if k in own
                  and not nn.parameter.is_lazy(own[k]) and v.shape != own[k].shape]
    if mismatched:
        lines = "\n".join("  " + _("{key}: checkpoint {saved} vs model {own}").format(
                               key=k, saved=list(a.shape), own=list(b.shape))
                          for k, a, b in mismatched)
        modules = list(dict.fromkeys(k.rpartition(".")[0] or k for k, _, _ in mismatched))
        raise CheckpointError(
            path, _("{n_mismatched} tensor(s) have a different shape than in the model:\n{lines}").format(
                      n_mismatched=len(mismatched), lines=lines),
            _("The checkpoint comes from a model built differently (another class count?). Either build "
              "the model as it was saved, load, then replace that layer (the head), or load everything "
              "else with load_weights(model, path, strict=False, exclude={modules!r}).").format(
                modules=modules))
    check_tensors(path, state, own)  # sparse, meta, quantized, wrong dtype: before any copy
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        parts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected"]
        detail = "".join([_("\n  missing from the file: {keys}").format(keys=_short_list(missing))
                          if missing else "",
                          _("\n  not in the model: {keys}").format(keys=_short_list(unexpected))
                          if unexpected else ""])
        raise CheckpointError(
            path, _("its keys do not match the model ({parts}):{detail}").format(
                      parts=', '.join(parts), detail=detail),
            _("Is this the right model class and configuration? If a part differs on purpose, load with "
              "strict=False and check the returned missing_keys and unexpected_keys."))
    return state


def _load_state(model: nn.Module, state: Mapping[str, Tensor], path: Path, *, strict: bool = True,
                exclude: Iterable[str] = ()) -> IncompatibleKeys:
    """Check everything first (``_plan_state``), then load: a refused file changes nothing."""
    state = _plan_state(model, state, path, strict=strict, exclude=exclude)
    report = unwrap_model(model).load_state_dict(state, strict=False)
    return IncompatibleKeys(list(report.missing_keys), list(report.unexpected_keys))


def _safetensors_bytes(state: Mapping[str, Tensor]) -> bytes:
    """Serialise for safetensors, storing each tied (shared) tensor once, like ``save_model``."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    storages: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
               tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() > 0 and key in seen and name != "format":  # "format" is metadata's
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor
        storages.setdefault((tensor.device, tensor.untyped_storage().data_ptr()), []).append(name)
    # Views that overlap without being identical (rare) are stored as independent copies.
    for names in storages.values():
        if len(names) > 1:
            for name in names:
                tensors[name] = tensors[name].clone()
    tensors = {k: v.to("cpu").contiguous() for k, v in tensors.items()}
    return save(tensors, metadata={"format": "pt", **aliases})


def save_weights(model: nn.Module | Mapping[str, Tensor], path: PathLike) -> Path:
    """Write the unwrapped model's state_dict (no ``module.``/``_orig_mod.`` prefixes), atomically.

    A ``.safetensors`` suffix writes safetensors (code-free; tied tensors are stored once), any
    other suffix ``torch.save``. A state_dict may be passed instead of a model; its prefixes are
    stripped.

    >>> save_weights(nn.DataParallel(net), "runs/net.safetensors")
    PosixPath('runs/net.safetensors')
    """
    path = Path(path)
    if isinstance(model, nn.Module):
        state: Mapping[str, Tensor] = unwrap_model(model).state_dict()
    else:
        state = strip_prefixes(model)
    if path.suffix == ".safetensors":
        bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
        if bad:
            raise CheckpointError(path, _("safetensors stores only tensors, not {bad!r}").format(
                                            bad=bad[0]),
                                  _("Use a .pt file name instead."))
        data = _safetensors_bytes(state)
        _atomic_write(path, lambda f: f.write(data))
    else:
        _check_storable(path, {"the model's state_dict": state})
        _atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_weights(model: nn.Module, path: PathLike, *, map_location: Any = "cpu",
                 strict: bool = True, trusted: bool = False,
                 exclude: Iterable[str] = ()) -> IncompatibleKeys:
    """Load weights into ``model`` (or the module inside its wrappers) from any of our file kinds.

    Accepts a state_dict file, a safetensors file or a checkpoint dict with the weights under
    ``model``, ``model_state_dict`` or ``state_dict``. Keys are matched as saved first; when they
    do not all match, wrapper prefixes are stripped (so a model whose own submodule is called
    ``module``, like ``AveragedModel``, still loads its own files). Loads with ``weights_only=True``
    (memory-mapped when possible) onto ``map_location``; the model may sit on another device.
    Shapes are checked first: a mismatch raises ``CheckpointError`` naming each key and both
    shapes, also with ``strict=False``. ``exclude`` names modules or keys to skip (e.g.
    ``["fc"]`` for a new head, with ``strict=False``). ``trusted=True`` unpickles with
    ``weights_only=False`` and also accepts a whole pickled model: only for files you trust.
    Returns the missing/unexpected keys.

    >>> load_weights(model, "runs/last.pt")
    IncompatibleKeys(missing_keys=[], unexpected_keys=[])
    """
    path = Path(path)
    obj = _read(path, map_location=map_location, trusted=trusted)
    return _load_state(model, _find_weights(obj, path), path, strict=strict, exclude=exclude)


def load_whole_model(path: PathLike, *, trusted: bool = False,
                     map_location: Any = "cpu") -> nn.Module:
    """Unpickle a model saved with ``torch.save(model)``; only with ``trusted=True``.

    Unpickling runs whatever code the file names, so without ``trusted=True`` this refuses and
    explains why. The model's class must be importable under the name it had when saved.

    >>> load_whole_model("model_full.pt", trusted=True)  # doctest: +SKIP
    TinyResNet(...)
    """
    path = _existing(path)
    if not trusted:
        obj = _read(path, map_location=map_location)  # raises the explanation for a pickled model
        kind = (_("weights (a state_dict)") if _is_state_dict(obj) else
                _("a {type}").format(type=type(obj).__name__))
        raise CheckpointError(path, _("it holds {kind}, not a whole pickled model").format(kind=kind),
                              _("Build the model in code and call load_weights(model, path)."))
    obj = _read(path, map_location=map_location, trusted=True)
    if not isinstance(obj, nn.Module):
        raise CheckpointError(path, _("it holds a {type}, not an nn.Module").format(
                                        type=type(obj).__name__),
                              _("Build the model in code and call load_weights(model, path)."))
    return obj
