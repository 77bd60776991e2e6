"""Saving and loading weights and resumable training checkpoints, safely and atomically.

>>> save_checkpoint("runs/last.pt", model=model, optimizer=optimizer, epoch=3, best_acc=0.97)
>>> load_checkpoint("runs/last.pt", model=model, optimizer=optimizer)["start_epoch"]
4

Everything here loads with ``weights_only=True`` (no pickled code runs), strips the ``module.`` and
``_orig_mod.`` prefixes that DataParallel, DistributedDataParallel and ``torch.compile`` add, and
writes through a temporary file that is renamed onto the target, so a crash mid-save leaves the
previous file intact. A crash can leave the temporary file behind: it is named
``.<name>.tmp-<pid>`` next to the target and nothing here ever reads it; delete it when you like.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import random
import re
import reprlib
import struct
import sys
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

FORMAT = "helpers.checkpoint/1"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
WEIGHT_KEYS = ("model", "model_state_dict", "state_dict")
# Top-level keys of a checkpoint written by save_checkpoint; any other key is a user extra.
RESERVED_KEYS = frozenset({"format", "epoch", "start_epoch", "model", "optimizer", "scheduler",
                           "scaler", "rng"})
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_MAGIC = b"PK\x03\x04"

PathLike = str | os.PathLike
_SHORT = reprlib.Repr()  # short reprs of user values in messages and summaries
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 50, 70, 4, 3

DAMAGED_ADVICE = (
    "If the file was cut off (a crash or a full disk during a plain torch.save, an interrupted "
    "copy or download), use an earlier checkpoint or copy it again. Files written by "
    "helpers.checkpoint are replaced atomically, so a crash while saving leaves the previous "
    "version intact.")
UNSAFE_ADVICE = (
    "Loading a pickle can run arbitrary code, so torch.load with weights_only=True (the default "
    "since torch 2.6) and these helpers refuse it; a whole model saved with torch.save(model) "
    "looks exactly like this. If you made the file yourself or trust its source, load it on "
    "purpose with load_whole_model(path, trusted=True) or load_weights(model, path, "
    "trusted=True), then re-save only the weights with save_weights(model, path).")
PLAIN_TYPES_ADVICE = (
    "A checkpoint may hold only tensors, numbers, strings, bools, None and lists, tuples and dicts "
    "of them (that is what torch.load(weights_only=True) accepts). Convert first: float(x) or "
    "int(x) for NumPy numbers, x.tolist() for arrays, str(p) for paths, dataclasses.asdict(cfg) "
    "for a config, history.to_dict() for a History.")


class CheckpointError(RuntimeError):
    """A checkpoint or weights file cannot be written or read; says which file, why and what to do.

    >>> str(CheckpointError("w.pt", "the file is empty (0 bytes)", "Save it again."))
    'w.pt: the file is empty (0 bytes)\\nSave it again.'
    """

    def __init__(self, path: PathLike, reason: str, advice: str = "") -> None:
        self.path, self.reason, self.advice = Path(path), reason, advice
        super().__init__(f"{path}: {reason}" + (f"\n{advice}" if advice else ""))


class IncompatibleKeys(NamedTuple):
    """The ``missing_keys`` / ``unexpected_keys`` report of ``load_state_dict``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# --- prefixes and wrappers -----------------------------------------------------------------------


def _strip_key(key: str, prefixes: tuple[str, ...]) -> str:
    while True:
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            return key


def strip_prefixes(state_dict: Mapping[str, Any],
                   prefixes: Iterable[str] = WRAPPER_PREFIXES) -> OrderedDict[str, Any]:
    """A new state_dict without wrapper prefixes at the start of its keys, in any order and repeat.

    ``module._orig_mod.fc.weight`` becomes ``fc.weight``; ``modules.0.weight`` and ``module_x.bias``
    are left alone because they do not start with a whole prefix. Keys without a prefix stay as they
    are (a mixed dict is fine), the order of the keys is kept, the tensors are shared, not copied,
    and the ``_metadata`` attribute of a ``model.state_dict()`` is carried over with stripped keys.
    The input is not changed. Raises ``ValueError`` when two keys would become the same key.

    It builds on ``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present``, which strips
    one prefix per call from every key that has it (not only when all keys do), in place, and moves
    the renamed keys to the end; here it runs on a copy until no key has a prefix left.

    >>> list(strip_prefixes({"module._orig_mod.fc.bias": 0, "modules.0.w": 1}))
    ['fc.bias', 'modules.0.w']
    """
    prefixes = tuple(prefixes)
    for prefix in prefixes:
        if not prefix.endswith(".") or prefix == "." or any(
                other != prefix and other.startswith(prefix) for other in prefixes):
            raise ValueError(f"prefixes must end with '.' and none may start with another; "
                             f"got {prefixes}")
    renamed: dict[str, list[str]] = {}
    for key in state_dict:
        renamed.setdefault(_strip_key(key, prefixes), []).append(key)
    clashes = {new: old for new, old in renamed.items() if len(old) > 1}
    if clashes:
        new, old = next(iter(clashes.items()))
        raise ValueError(f"stripping {prefixes} would merge {len(old)} keys into {new!r}: {old}; "
                         f"the state_dict mixes a wrapped and an unwrapped copy of the same tensor")
    work: OrderedDict[str, Any] = OrderedDict(state_dict)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        work._metadata = OrderedDict(metadata)  # type: ignore[attr-defined]
    while True:
        meta = getattr(work, "_metadata", ())
        found = [p for p in prefixes if any(k.startswith(p) for k in work)  # torch's own test:
                 or any(m == p.replace(".", "") or m.startswith(p) for m in meta)]
        if not found:
            break
        for prefix in found:
            consume_prefix_in_state_dict_if_present(work, prefix)
    result: OrderedDict[str, Any] = OrderedDict(
        (_strip_key(key, prefixes), work[_strip_key(key, prefixes)]) for key in state_dict)
    if metadata is not None:
        result._metadata = work._metadata  # type: ignore[attr-defined]
    return result


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DataParallel, DistributedDataParallel and ``torch.compile`` wrappers.

    >>> unwrap_model(nn.DataParallel(net)) is net
    True
    """
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # only loaded once torch.compile ran
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
            model = model._orig_mod
        else:
            return model


# --- atomic writes ---------------------------------------------------------------------------


def temp_path_for(path: PathLike) -> Path:
    """The temporary file a save to ``path`` writes first: ``.<name>.tmp-<pid>`` in the same folder.

    >>> temp_path_for("runs/last.pt").name  # doctest: +SKIP
    '.last.pt.tmp-4242'
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":  # Windows cannot open a directory; NTFS journals the rename
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a few file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write a temp file in the same folder, fsync it, rename it onto ``path``, fsync the folder."""
    if path.is_dir():
        raise CheckpointError(path, "this is a folder", "Give a file name, e.g. runs/last.pt.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


# --- what may go into a file -------------------------------------------------------------------


def _tensors_emptied(value: Any) -> Any:
    """The same structure with every tensor replaced by an empty one (cheap to pickle)."""
    if type(value) in (Tensor, nn.Parameter):
        return torch.empty(0)
    if type(value) in (dict, OrderedDict):
        return type(value)((k, _tensors_emptied(v)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(_tensors_emptied(v) for v in value)
    return value


_PLAIN_LEAVES = (Tensor, nn.Parameter, int, float, str, bool, type(None))


def _plainly_storable(value: Any) -> bool:
    """True for tensors, numbers, strings and None nested in dicts, lists and tuples: what a
    state_dict or a training history is made of. These always load with ``weights_only=True``,
    so the slower round trip below is needed only for anything else."""
    kind = type(value)
    if kind in _PLAIN_LEAVES:
        return True
    if kind in (dict, OrderedDict):
        return all(type(k) in (str, int) and _plainly_storable(v) for k, v in value.items())
    if kind in (list, tuple):
        return all(_plainly_storable(v) for v in value)
    return False


def _unsafe_reason(value: Any) -> str | None:
    """Why ``torch.load(weights_only=True)`` would refuse ``value``, or None when it would load."""
    if _plainly_storable(value):
        return None
    buffer = io.BytesIO()
    try:
        torch.save(_tensors_emptied(value), buffer)
    except Exception as exc:  # lambdas, open files, locks...
        return f"it cannot be pickled ({type(exc).__name__}: {_first_line(exc)})"
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except Exception as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else _first_line(exc)
        return f"torch.load(weights_only=True) refuses {what}"
    return None


def _check_storable(path: Path, parts: Mapping[str, Any]) -> None:
    for name, value in parts.items():
        reason = _unsafe_reason(value)
        if reason is not None:
            shown = _SHORT.repr(value)
            raise CheckpointError(path, f"cannot store {name} = {shown}: {reason}",
                                  PLAIN_TYPES_ADVICE + " Nothing was written.")


# --- reading files ---------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 160 else line[:157] + "..."


def _existing(path: PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such checkpoint file (looked in {path.resolve().parent}). Check the name "
            f"and the folder, or train and save first.")
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())[:8]
        raise CheckpointError(path, "this is a folder, not a checkpoint file",
                              f"Pick one of its files: {names}")
    return path


def _is_safetensors(path: Path, head: bytes) -> bool:
    if path.suffix == ".safetensors":
        return True
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 8 + header_len <= path.stat().st_size


def _safetensors_device(map_location: Any) -> str:
    if isinstance(map_location, (str, torch.device)):
        return str(map_location)
    return "cpu"


def _read_safetensors(path: Path, map_location: Any) -> dict[str, Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        tensors = load_file(path, device=_safetensors_device(map_location))
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"not a readable safetensors file ({_first_line(exc)})",
                              DAMAGED_ADVICE) from None
    # Tied tensors are stored once; the metadata maps each dropped name to the name kept (the
    # convention of safetensors.torch.save_model, which save_weights follows).
    for alias, kept in metadata.items():
        if alias not in tensors and kept in tensors:
            tensors[alias] = tensors[kept]
    return tensors


def _unreadable(path: Path, head: bytes, exc: BaseException) -> CheckpointError:
    message = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return CheckpointError(
            path, f"it holds pickled Python objects, not only tensors (it refers to "
                  f"{found.group(1)})", UNSAFE_ADVICE)
    # A legacy torch.save file starts with a pickled magic number (maybe cut short here).
    legacy_torch = _LEGACY_TORCH_MAGIC.startswith(head[:len(_LEGACY_TORCH_MAGIC)])
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5 and not legacy_torch:
        return CheckpointError(path, "it is a plain Python pickle, not a file written by "
                                     "torch.save or safetensors", UNSAFE_ADVICE)
    if head.lstrip()[:1] in (b"{", b"["):
        return CheckpointError(path, "it looks like a JSON or text file, not a PyTorch file",
                               "Pass the .pt/.pth/.safetensors file that holds the weights.")
    if head.startswith(_ZIP_MAGIC):
        with contextlib.suppress(zipfile.BadZipFile, OSError):
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    return CheckpointError(
                        path, "it is a zip archive, but not one written by torch.save "
                              "(it has no data.pkl inside)",
                        "Pass the .pt/.pth file itself; if it is an archive of checkpoints, "
                        "unpack it first.")
    cause = _first_line(exc) or type(exc).__name__
    if "Weights only load failed" in cause:
        detail = re.search(r"Unsupported operand \d+", message)
        cause = detail.group(0) if detail else "the pickle data is invalid"
    return CheckpointError(path, f"the file is damaged or is not a PyTorch file "
                                 f"({type(exc).__name__}: {cause})", DAMAGED_ADVICE)


def _read(path: PathLike, *, map_location: Any = "cpu", trusted: bool = False,
          mmap: bool = True) -> Any:
    """Load any file these helpers accept; only a trusted file may run pickled code."""
    path = _existing(path)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(path, "the file is empty (0 bytes)", DAMAGED_ADVICE)
    if _is_safetensors(path, head):
        return _read_safetensors(path, map_location)
    if trusted:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            missing_class = isinstance(exc, (AttributeError, ImportError))
            hint = ("Pickle stores a reference to the model's class, not its code: import or "
                    "define that class before loading." if missing_class else DAMAGED_ADVICE)
            raise CheckpointError(path, f"cannot unpickle it ({type(exc).__name__}: "
                                        f"{_first_line(exc)})", hint) from None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign pickles
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True,
                              mmap=mmap and head.startswith(_ZIP_MAGIC))
    except Exception as exc:
        raise _unreadable(path, head, exc) from None


def _is_state_dict(obj: Any) -> bool:
    """A non-empty str -> tensor mapping (``_extra_state`` entries may hold other objects)."""
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and (isinstance(v, Tensor) or k.endswith("_extra_state"))
        for k, v in obj.items())


def _find_weights(obj: Any, path: Path) -> Mapping[str, Tensor]:
    if isinstance(obj, nn.Module):  # only reached with trusted=True
        return unwrap_model(obj).state_dict()
    if isinstance(obj, Mapping):
        for key in WEIGHT_KEYS:
            if _is_state_dict(obj.get(key)):
                return obj[key]
        if _is_state_dict(obj):
            return obj
        keys = ", ".join(map(str, list(obj)[:10]))
        raise CheckpointError(path, f"it holds a dict without weights (keys: {keys})",
                              f"Expected a state_dict, or a checkpoint dict with the weights under "
                              f"one of {WEIGHT_KEYS}.")
    raise CheckpointError(path, f"it holds a {type(obj).__name__}, not weights",
                          "Expected a state_dict or a checkpoint dict.")


def _short_list(keys: Iterable[str], limit: int = 6) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _excluded(key: str, exclude: Iterable[str]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in exclude)


def _load_state(model: nn.Module, state: Mapping[str, Tensor], path: Path, *, strict: bool = True,
                exclude: Iterable[str] = ()) -> IncompatibleKeys:
    """Match keys (stripping wrapper prefixes if that helps), check shapes, then load."""
    target = unwrap_model(model)
    own = target.state_dict()
    if not set(state) <= set(own):
        try:
            stripped = strip_prefixes(state)
        except ValueError as exc:
            raise CheckpointError(path, str(exc), "Save the weights from one model.") from None
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
        lines = "\n".join(f"  {k}: checkpoint {list(a.shape)} vs model {list(b.shape)}"
                          for k, a, b in mismatched)
        modules = list(dict.fromkeys(k.rpartition(".")[0] or k for k, _, _ in mismatched))
        raise CheckpointError(
            path, f"{len(mismatched)} tensor(s) have a different shape than in the model:\n{lines}",
            f"The checkpoint comes from a model built differently (another class count?). Either "
            f"build the model as it was saved, load, then replace that layer (the head), or load "
            f"everything else with load_weights(model, path, strict=False, exclude={modules!r}).")
    report = target.load_state_dict(state, strict=False)
    missing, unexpected = list(report.missing_keys), list(report.unexpected_keys)
    if strict and (missing or unexpected):
        parts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected"]
        detail = "".join([f"\n  missing from the file: {_short_list(missing)}" if missing else "",
                          f"\n  not in the model: {_short_list(unexpected)}" if unexpected else ""])
        raise CheckpointError(
            path, f"its keys do not match the model ({', '.join(parts)}):{detail}",
            "Is this the right model class and configuration? If a part differs on purpose, load "
            "with strict=False and check the returned missing_keys and unexpected_keys.")
    return IncompatibleKeys(missing, unexpected)


# --- weights -----------------------------------------------------------------------------------


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
        if tensor.numel() > 0 and key in seen:
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
            raise CheckpointError(path, f"safetensors stores only tensors, not {bad[0]!r}",
                                  "Use a .pt file name instead.")
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
        kind = "weights (a state_dict)" if _is_state_dict(obj) else f"a {type(obj).__name__}"
        raise CheckpointError(path, f"it holds {kind}, not a whole pickled model",
                              "Build the model in code and call load_weights(model, path).")
    obj = _read(path, map_location=map_location, trusted=True)
    if not isinstance(obj, nn.Module):
        raise CheckpointError(path, f"it holds a {type(obj).__name__}, not an nn.Module",
                              "Build the model in code and call load_weights(model, path).")
    return obj


# --- training checkpoints -----------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": (int(version), tuple(int(x) for x in internal),
                   None if gauss is None else float(gauss)),
        "numpy": {"bit_generator": str(numpy_state["bit_generator"]),
                  "key": [int(x) for x in numpy_state["state"]["key"]],
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["bit_generator"], np.asarray(s["key"], dtype=np.uint32), s["pos"],
                             s["has_gauss"], s["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        count = min(len(state["cuda"]), torch.cuda.device_count())
        for index in range(count):
            torch.cuda.set_rng_state(state["cuda"][index].cpu(), index)


def save_checkpoint(path: PathLike, *, model: nn.Module, optimizer: Any = None,
                    scheduler: Any = None, scaler: Any = None, epoch: int, **extra: Any) -> Path:
    """Write one resumable file: weights, optimizer, scheduler, AMP scaler, epoch, RNG, extras.

    ``epoch`` is the epoch just finished (``fit`` passes it to its callback). Extras (best metric,
    class names, a config dict, ``history.to_dict()``...) must load under ``weights_only=True``;
    anything else is refused before the file is touched. The write is atomic.

    >>> save_checkpoint("runs/last.pt", model=model, optimizer=optimizer, epoch=2, best_acc=0.9)
    PosixPath('runs/last.pt')
    """
    path = Path(path)
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise CheckpointError(path, f"epoch must be an int, got {epoch!r}",
                              "Pass the number of the epoch just finished, e.g. epoch=3.")
    clash = sorted(RESERVED_KEYS & set(extra))
    if clash:
        raise CheckpointError(path, f"{clash[0]!r} is a reserved checkpoint key",
                              f"Rename that extra; reserved: {sorted(RESERVED_KEYS)}.")
    checkpoint: dict[str, Any] = {"format": FORMAT, "epoch": epoch,
                                  "model": unwrap_model(model).state_dict()}
    for name, part in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if part is not None:
            checkpoint[name] = part.state_dict()
    checkpoint["rng"] = _rng_state()
    checkpoint.update(extra)
    _check_storable(path, checkpoint)
    _atomic_write(path, lambda f: torch.save(checkpoint, f))
    return path


def load_checkpoint(path: PathLike, *, model: nn.Module, optimizer: Any = None,
                    scheduler: Any = None, scaler: Any = None, map_location: Any = "cpu",
                    restore_rng: bool = True) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote into the objects given; return epoch info and extras.

    The result holds ``epoch`` (the last finished epoch), ``start_epoch`` (``epoch + 1``, where
    training resumes) and every extra. RNG states of Python, NumPy, torch and CUDA come back too
    (CUDA only when CUDA is available here), so a resumed run continues bit for bit.

    >>> info = load_checkpoint("runs/last.pt", model=model, optimizer=optimizer)
    >>> fit(model, data, optimizer, epochs=10, start_epoch=info["start_epoch"])  # doctest: +SKIP
    """
    path = Path(path)
    obj = _read(path, map_location=map_location, mmap=False)
    if not isinstance(obj, Mapping) or "epoch" not in obj:
        what = "weights (a state_dict)" if _is_state_dict(obj) else "no epoch number"
        raise CheckpointError(path, f"it holds {what}, not a training checkpoint",
                              "Load it with load_weights(model, path) and train from epoch 0, or "
                              "pass a file written by save_checkpoint.")
    _load_state(model, _find_weights(obj, path), path)
    parts = (("optimizer", optimizer, ("optimizer", "optimizer_state_dict")),
             ("scheduler", scheduler, ("scheduler", "scheduler_state_dict")),
             ("scaler", scaler, ("scaler", "scaler_state_dict")))
    for name, target, keys in parts:
        if target is None:
            continue
        key = next((k for k in keys if k in obj), None)
        if key is None:
            raise CheckpointError(path, f"it holds no {name} state",
                                  f"It was saved without {name}=...; leave out {name}= here or "
                                  f"build a fresh {name}.")
        try:
            target.load_state_dict(obj[key])
        except Exception as exc:
            raise CheckpointError(
                path, f"the {name} state does not fit ({type(exc).__name__}: {_first_line(exc)})",
                f"Build the {name} as when saving (same type, same parameters in the same order "
                f"and groups).") from None
    if restore_rng and isinstance(obj.get("rng"), Mapping):
        _restore_rng(obj["rng"])
    known = RESERVED_KEYS | set(WEIGHT_KEYS) | {k for _, _, keys in parts for k in keys}
    extras = {k: v for k, v in obj.items() if k not in known}
    epoch = int(obj["epoch"])
    return {"epoch": epoch, "start_epoch": epoch + 1, **extras}


# --- looking at files and models ------------------------------------------------------------------


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


__all__ = ["CheckpointError", "IncompatibleKeys", "checkpoint_summary", "load_checkpoint",
           "load_weights", "load_whole_model", "outputs_equal", "save_checkpoint", "save_weights",
           "strip_prefixes", "temp_path_for", "unwrap_model"]
