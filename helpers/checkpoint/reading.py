"""Reading any file the helpers accept: format detection, safe loading, clear errors.

>>> _read("runs/last.pt")["epoch"]  # doctest: +SKIP
3
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.checkpoint.archive import inflation_problem
from helpers.checkpoint.errors import (
    DAMAGED_ADVICE,
    UNSAFE_ADVICE,
    WEIGHT_KEYS,
    CheckpointError,
    PathLike,
    _first_line,
    _os_error,
)
from helpers.checkpoint.prefixes import unwrap_model
from helpers.i18n import N_, _

_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_MAGIC = b"PK\x03\x04"
_DCP_ADVICE = N_("Load it with load_sharded(folder, model=...) or load_sharded_weights(model, folder), "
               "or convert it to one file with dcp_to_file(folder, path).")


def _existing(path: PathLike) -> Path:
    """``path`` if it is a regular file; anything else (missing, a folder, a pipe, a link loop, no
    permission, a name too long or with a null byte) raises ``CheckpointError`` saying so."""
    path = Path(path)
    try:
        info = os.stat(path)  # follows links; a loop is ELOOP, not pathlib's RuntimeError
    except (OSError, ValueError) as exc:
        raise _os_error(path, exc) from None
    if stat.S_ISDIR(info.st_mode):
        if (path / ".metadata").is_file():  # DCP's index; checked without importing DCP
            raise CheckpointError(path, _("this is a DCP checkpoint folder "
                                          "(torch.distributed.checkpoint), not a checkpoint file"),
                                  _DCP_ADVICE)
        try:
            names = sorted(p.name for p in path.iterdir())[:8]
        except OSError:
            names = []
        raise CheckpointError(path, _("this is a folder, not a checkpoint file"),
                              _("Pick one of its files: {names}").format(names=names))
    if not stat.S_ISREG(info.st_mode):  # a FIFO, socket or device would block or stream forever
        raise CheckpointError(path, _("this is not a regular file (a pipe, socket or device)"),
                              _("Pass a checkpoint file saved on disk."))
    return path


def _head(path: Path) -> bytes:
    """The first 16 bytes; an unreadable file raises ``CheckpointError``, not ``PermissionError``."""
    try:
        with open(path, "rb") as f:
            return f.read(16)
    except OSError as exc:
        error = _os_error(path, exc)
        raise CheckpointError(path, error.reason, error.advice or DAMAGED_ADVICE) from None


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
        raise CheckpointError(path, _("not a readable safetensors file ({first_line})").format(
                                        first_line=_first_line(exc)),
                              DAMAGED_ADVICE) from None
    # Tied tensors are stored once; the metadata maps each dropped name to the name kept (the
    # convention of safetensors.torch.save_model, which save_weights follows).
    for alias, kept in metadata.items():
        if alias == "format":  # safetensors' own {"format": "pt"}, even with a tensor named "pt"
            continue
        if alias not in tensors and kept in tensors:
            tensors[alias] = tensors[kept]
    return tensors


def _unreadable(path: Path, head: bytes, exc: BaseException) -> CheckpointError:
    message = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return CheckpointError(
            path, _("it holds pickled Python objects, not only tensors (it refers to {removeprefix})").format(
                      removeprefix=found.group(1).removeprefix('builtins.')), UNSAFE_ADVICE)
    # A legacy torch.save file starts with a pickled magic number (maybe cut short here).
    legacy_torch = _LEGACY_TORCH_MAGIC.startswith(head[:len(_LEGACY_TORCH_MAGIC)])
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5 and not legacy_torch:
        return CheckpointError(path, _("it is a plain Python pickle, not a file written by torch.save "
                                       "or safetensors"), UNSAFE_ADVICE)
    if head.lstrip()[:1] in (b"{", b"["):
        return CheckpointError(path, _("it looks like a JSON or text file, not a PyTorch file"),
                               _("Pass the .pt/.pth/.safetensors file that holds the weights."))
    if head.startswith(_ZIP_MAGIC):
        with contextlib.suppress(zipfile.BadZipFile, OSError):
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    return CheckpointError(
                        path, _("it is a zip archive, but not one written by torch.save (it has no "
                                "data.pkl inside)"),
                        _("Pass the .pt/.pth file itself; if it is an archive of checkpoints, unpack it "
                          "first."))
    cause = _first_line(exc) or type(exc).__name__
    if "Weights only load failed" in cause:
        detail = re.search(r"Unsupported operand \d+", message)
        cause = detail.group(0) if detail else "the pickle data is invalid"
    return CheckpointError(path, _("the file is damaged or is not a PyTorch file ({type}: {cause})").format(
                                     type=type(exc).__name__, cause=cause), DAMAGED_ADVICE)


def _check_inflation(path: Path) -> None:
    """Refuse a zip whose members inflate far beyond the file's size, before torch reads it."""
    try:
        with zipfile.ZipFile(path) as archive:
            problem = inflation_problem(archive, path.stat().st_size)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a readable zip: torch.load says why (damaged, cut short)
    if problem:
        raise CheckpointError(path, problem, DAMAGED_ADVICE)


def _read(path: PathLike, *, map_location: Any = "cpu", trusted: bool = False,
          mmap: bool = True) -> Any:
    """Load any file these helpers accept; only a trusted file may run pickled code."""
    path = _existing(path)
    head = _head(path)
    if not head:
        raise CheckpointError(path, _("the file is empty (0 bytes)"), DAMAGED_ADVICE)
    if _is_safetensors(path, head):
        return _read_safetensors(path, map_location)
    if head.startswith(_ZIP_MAGIC):
        _check_inflation(path)
    if trusted:
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            missing_class = isinstance(exc, (AttributeError, ImportError))
            hint = (_("Pickle stores a reference to the model's class, not its code: import or "
                      "define that class before loading.") if missing_class else DAMAGED_ADVICE)
            raise CheckpointError(path, _("cannot unpickle it ({type}: {message})").format(
                                            type=type(exc).__name__, message=_first_line(exc)),
                                  hint) from None
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
        raise CheckpointError(path, _("it holds a dict without weights (keys: {keys})").format(keys=keys),
                              _("Expected a state_dict, or a checkpoint dict with the weights under one "
                                "of {WEIGHT_KEYS}.").format(WEIGHT_KEYS=WEIGHT_KEYS))
    raise CheckpointError(path, _("it holds a {type}, not weights").format(type=type(obj).__name__),
                          _("Expected a state_dict or a checkpoint dict."))
