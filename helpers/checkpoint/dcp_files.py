"""A DCP checkpoint folder: its ``.metadata`` index read safely, checks, temporary folders.

>>> check_keys("runs/dcp/last", {"model": model.state_dict()})  # raises naming what does not fit

A DCP folder holds ``.metadata`` (the index: every key, its shape, which file holds each chunk)
and one ``__<rank>_0.distcp`` file per rank that wrote. ``dcp.load`` silently skips keys that
are in the folder but not in the target; ``check_keys`` names them. ``.metadata`` is a pickle:
``read_dcp_metadata`` lets only DCP's own classes through.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import pickle
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata

from helpers.checkpoint.atomic import _fsync_dir, _process_exists
from helpers.checkpoint.errors import DAMAGED_ADVICE, CheckpointError, PathLike, _first_line
from helpers.checkpoint.weights import _short_list
from helpers.i18n import N_, _

METADATA = ".metadata"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>.+)-(?P<pid>\d+)$")
_SINGLE_PROCESS = ".*assuming the intent is to (save|load) in a single process"
_NOT_DCP = N_("It looks like a torch.save file: load it with load_checkpoint / load_weights, or "
            "convert it with file_to_dcp(path, folder).")


def is_dcp_folder(path: PathLike) -> bool:
    """True for a folder with a DCP ``.metadata`` index.

    >>> is_dcp_folder("runs/dcp/last"), is_dcp_folder("runs/pipeline/last.pt")  # doctest: +SKIP
    (True, False)
    """
    return Path(path).is_dir() and (Path(path) / METADATA).is_file()


def _temp_name(folder: Path, kind: str) -> Path:
    return folder.with_name(f".{folder.name}.{kind}-{socket.gethostname()}-{os.getpid()}")


def _dead(found: re.Match[str]) -> bool:
    """A temp folder of a process of this machine that no longer runs (other machines: unknown)."""
    pid = int(found["pid"])
    return found["host"] == socket.gethostname() and pid != os.getpid() and not _process_exists(pid)


def remove_stale_sharded_temps(folder: PathLike) -> list[Path]:
    """Put back a checkpoint that a crash left renamed away, then delete the temporary folders of
    saves whose process no longer runs; returns the folders deleted.

    >>> remove_stale_sharded_temps("runs/dcp/last")  # doctest: +SKIP
    [PosixPath('runs/dcp/.last.tmp-host-4242')]
    """
    folder = Path(folder)
    removed = []
    with contextlib.suppress(OSError):
        entries = sorted(folder.parent.iterdir())
        for entry in entries:  # killed between the two renames of a swap: the previous one returns
            found = _TEMP.match(entry.name)
            if (found and found["kind"] == "old" and found["name"] == folder.name and _dead(found)
                    and not folder.exists() and is_dcp_folder(entry)):
                os.replace(entry, folder)
        for entry in entries:
            found = _TEMP.match(entry.name)
            if found and entry.is_dir() and not entry.is_symlink() and _dead(found):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename the finished ``tmp`` onto ``folder``; the previous one is moved aside first and
    deleted last, so a crash in between leaves it to ``remove_stale_sharded_temps``."""
    old = None
    if folder.exists():
        old = _temp_name(folder, "old")
        os.replace(folder, old)
    try:
        os.replace(tmp, folder)
    except BaseException:
        if old is not None and not folder.exists():
            os.replace(old, folder)  # the new one could not go in: the previous one goes back
        raise
    _fsync_dir(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# The index names paths by where the class is defined: pathlib on Python <= 3.12, the private
# pathlib._local on 3.13. Compare the classes themselves, not their module names.
_PATH_CLASSES = (pathlib.Path, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePath,
                 pathlib.PurePosixPath, pathlib.PureWindowsPath)


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's index and nothing else: any other global in it is refused."""

    def find_class(self, module: str, name: str) -> Any:
        found = super().find_class(module, name) if module.startswith(
            ("torch.distributed.checkpoint.", "torch", "pathlib")) else None
        allowed = (isinstance(found, type) and module.startswith("torch.distributed.checkpoint.")
                   or found is torch.Size or isinstance(found, (torch.dtype, torch.layout))
                   or (module, name) == ("torch.serialization", "_get_layout")
                   or found in _PATH_CLASSES)
        if not allowed:
            raise pickle.UnpicklingError(f"global {module}.{name} is not part of a DCP index")
        return found


def _clone(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, Mapping):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    return value


def _resolve(folder: PathLike) -> Path:
    folder = Path(folder)
    if folder.is_file():
        raise CheckpointError(folder, _("this is a file, not a DCP checkpoint folder"), _NOT_DCP)
    if not folder.exists():
        remove_stale_sharded_temps(folder)  # a save killed between its renames: put it back
    if not folder.exists():
        raise CheckpointError(folder, _("no such DCP checkpoint folder"),
                              _("Check the name, or save with save_sharded first."))
    if not (folder / METADATA).exists():
        names = sorted(p.name for p in folder.iterdir())[:8]
        raise CheckpointError(folder, _("it has no {METADATA}, so it is not a complete DCP checkpoint "
                                        "(it holds {names})").format(METADATA=METADATA, names=names),
                              _("A save that never finished leaves no .metadata; use an earlier "
                                "checkpoint. For a folder of .pt files, pick one of them."))
    return folder


def read_dcp_metadata(folder: PathLike) -> Metadata:
    """The ``.metadata`` index of a DCP folder, read safely; a damaged index raises
    ``CheckpointError``. Its ``state_dict_metadata`` lists every key (``model.fc.weight``...).

    >>> sorted(read_dcp_metadata("runs/dcp/last").state_dict_metadata)[:1]  # doctest: +SKIP
    ['epoch']
    """
    folder = _resolve(folder)
    try:
        with open(folder / METADATA, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except Exception as exc:
        raise CheckpointError(folder, _("its {file} is damaged ({type}: {message})").format(
            file=METADATA, type=type(exc).__name__, message=_first_line(exc) or _("cut short")),
            DAMAGED_ADVICE) from None
    if not isinstance(metadata, Metadata) or not metadata.storage_data:
        raise CheckpointError(folder, _("its {file} is not a DCP index").format(file=METADATA),
                              DAMAGED_ADVICE)
    for info in metadata.storage_data.values():  # every shard file there and long enough
        shard = folder / info.relative_path
        if not shard.is_file():
            raise CheckpointError(folder, _("the shard file {relative_path} is missing").format(
                                              relative_path=info.relative_path),
                                  _("Copy the whole folder again (every __N_0.distcp file of every "
                                    "rank), or use an earlier checkpoint."))
        if shard.stat().st_size < info.offset + info.length:
            raise CheckpointError(folder, _("the shard file {relative_path} is cut short").format(
                                              relative_path=info.relative_path),
                                  DAMAGED_ADVICE)
    return metadata


def _flat(state: Mapping[str, Any], metadata: Metadata) -> dict[str, Any]:
    """``state``'s keys as DCP writes them (``optimizer.state.fc.weight.exp_avg``), by DCP's planner."""
    planner = DefaultLoadPlanner()
    planner.set_up_planner(dict(state), metadata, True)
    return dict(planner.state_dict)


def check_keys(folder: PathLike, state: Mapping[str, Any], *, strict: bool = True) -> None:
    """Raise one ``CheckpointError`` unless every key of ``state`` is in the checkpoint with the
    same shape and (``strict``) every checkpoint key under the same top-level names has a home.

    ``dcp.load`` silently skips checkpoint keys that the target lacks; this names them.

    >>> check_keys("runs/dcp/last", {"model": model.state_dict()})  # doctest: +SKIP
    """
    metadata = read_dcp_metadata(folder)
    saved = metadata.state_dict_metadata
    target = _flat(state, metadata)
    groups = tuple(f"{k}." for k in state)
    missing = [k for k in target if k not in saved]
    unused = [k for k in saved if k.startswith(groups) and k not in target] if strict else []
    shapes = []
    for key, value in target.items():
        info = saved.get(key)
        if isinstance(value, Tensor) != isinstance(info, TensorStorageMetadata) and info:
            shapes.append(f"  {key}: checkpoint {type(info).__name__} vs {type(value).__name__}")
        elif isinstance(value, Tensor) and isinstance(info, TensorStorageMetadata) and (
                tuple(info.size) != tuple(value.shape)):
            shapes.append("  " + _("{key}: checkpoint {saved} vs model {own}").format(
                key=key, saved=list(info.size), own=list(value.shape)))
    if missing or unused or shapes:
        detail = "".join([_("\n  missing from the checkpoint: {keys}").format(keys=_short_list(missing))
                          if missing else "",
                          _("\n  in the checkpoint, not in the target (DCP would skip them silently): "
                            "{keys}").format(keys=_short_list(unused)) if unused else "",
                          "\n" + "\n".join(shapes[:6]) if shapes else ""])
        raise CheckpointError(
            Path(folder), _("it does not fit ({n_missing} missing, {n_unused} unused, {n_shapes} of "
                            "another shape):{detail}").format(
                              n_missing=len(missing), n_unused=len(unused), n_shapes=len(shapes),
                              detail=detail),
            _("Is this the right model class and configuration (class count, width, depth) and the same "
              "optimizer type? Nothing was loaded."))


def shard_layout(folder: PathLike) -> dict[str, list[tuple[str, list[int], list[int]]]]:
    """Where each tensor of a DCP folder lives: ``key -> [(file, offsets, sizes), ...]``.

    A tensor sharded over two ranks has two chunks, one in each rank's ``__R_0.distcp``.

    >>> shard_layout("runs/dcp/last")["model.fc.weight"]  # doctest: +SKIP
    [('__0_0.distcp', [0, 0], [5, 64]), ('__1_0.distcp', [5, 0], [5, 64])]
    """
    metadata = read_dcp_metadata(folder)
    files = {(index.fqn, tuple(index.offset or ())): os.fspath(info.relative_path)
             for index, info in metadata.storage_data.items()}
    return {key: [(files.get((key, tuple(chunk.offsets)), "?"), list(chunk.offsets),
                   list(chunk.sizes)) for chunk in info.chunks]
            for key, info in metadata.state_dict_metadata.items()
            if isinstance(info, TensorStorageMetadata)}


__all__ = ["METADATA", "check_keys", "is_dcp_folder", "read_dcp_metadata",
           "remove_stale_sharded_temps", "shard_layout"]
