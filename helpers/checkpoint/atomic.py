"""Atomic writes: a temporary file in the same folder, fsync, rename onto the target.

>>> _atomic_write(Path("runs/w.pt"), lambda f: f.write(b"data"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from helpers.checkpoint.errors import CheckpointError, PathLike


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
