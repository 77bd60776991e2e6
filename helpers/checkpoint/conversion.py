"""DCP folder <-> one ``torch.save`` file, with DCP's own converters.

>>> dcp_to_file("runs/dcp/last", "runs/last.pt")  # then load_checkpoint / load_weights / deploy
PosixPath('runs/last.pt')

``dcp_to_file`` calls ``torch.distributed.checkpoint.format_utils.dcp_to_torch_save`` (also
``python -m torch.distributed.checkpoint.format_utils dcp_to_torch SRC DST``) and ``file_to_dcp``
``torch_save_to_dcp``; these helpers add the checks, the atomic writes and clear errors. Both
converters run in one process and hold the whole checkpoint in memory.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from torch.distributed.checkpoint.format_utils import dcp_to_torch_save, torch_save_to_dcp

from helpers.checkpoint.atomic import _fsync_dir, remove_stale_temps, temp_path_for
from helpers.checkpoint.dcp_files import (
    _SINGLE_PROCESS,
    _swap_in,
    _temp_name,
    is_dcp_folder,
    read_dcp_metadata,
    remove_stale_sharded_temps,
)
from helpers.checkpoint.errors import CheckpointError, PathLike, _first_line
from helpers.checkpoint.reading import _read
from helpers.i18n import _


def dcp_to_file(folder: PathLike, path: PathLike) -> Path:
    """Write the whole checkpoint in ``folder`` (DCP) as one ``torch.save`` file, atomically.

    A folder from ``save_sharded`` becomes a file that ``load_checkpoint`` and ``load_weights``
    read: full tensors, the same keys. DCP unpickles non-tensor entries without
    ``weights_only`` here: convert only folders you trust (your own runs).

    >>> dcp_to_file("runs/dcp/last", "runs/last.pt")
    PosixPath('runs/last.pt')
    """
    folder, path = Path(folder), Path(path)
    read_dcp_metadata(folder)  # a missing shard or a damaged index: one clear error first
    if is_dcp_folder(path) or path.is_dir():
        raise CheckpointError(path, _("this is a folder; the converted checkpoint is one file"),
                              _("Give a file name, e.g. runs/last.pt."))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = temp_path_for(path)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SINGLE_PROCESS)
            dcp_to_torch_save(folder, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        raise CheckpointError(folder, _("cannot convert it ({type}: {first_line})").format(
                                          type=type(exc).__name__, first_line=_first_line(exc))) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return path


def file_to_dcp(path: PathLike, folder: PathLike) -> Path:
    """Write a ``torch.save`` checkpoint file as a DCP folder (one process), atomically.

    The file is first read with ``weights_only=True`` (DCP's converter unpickles it fully), so a
    file with pickled code is refused. A file made by ``dcp_to_file`` converts back into a folder
    that ``load_sharded`` reads; a ``save_checkpoint`` file's optimizer state is keyed by numbers,
    not parameter names: load it with ``load_checkpoint`` and save with ``save_sharded`` instead.

    >>> file_to_dcp("runs/last.pt", "runs/dcp/from_file")
    PosixPath('runs/dcp/from_file')
    """
    path, folder = Path(path), Path(folder)
    if path.is_dir():
        raise CheckpointError(path, _("this is a folder (a DCP checkpoint?), not a checkpoint file"),
                              _("dcp_to_file(folder, path) converts the other way."))
    _read(path, mmap=False)  # refuses folders, pickled code and damaged files with one message
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(folder, _("this is a file; a DCP checkpoint is a folder"),
                              _("Give a folder name without a suffix, e.g. runs/dcp/last."))
    folder.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_sharded_temps(folder)
    tmp = _temp_name(folder, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SINGLE_PROCESS)
            torch_save_to_dcp(path, tmp)
        _swap_in(tmp, folder)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(path, _("cannot convert it ({type}: {first_line})").format(
                                        type=type(exc).__name__, first_line=_first_line(exc))) from None
    _fsync_dir(folder.parent)
    return folder



__all__ = ["dcp_to_file", "file_to_dcp"]
