"""Atomic writes, the temporary files a crash leaves behind, and the lock of a training folder.

>>> _atomic_write(Path("runs/w.pt"), lambda f: f.write(b"data"))  # doctest: +SKIP
>>> with FolderLock("runs/pipeline"):  # a second run on this folder now refuses  # doctest: +SKIP
...     train()
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from helpers.checkpoint.errors import CheckpointError, PathLike, _first_line, _os_error
from helpers.i18n import _

LOCK_NAME = ".lock"
# .<name>.tmp-<pid>-<thread>-<random>; the older .<name>.tmp-<pid> is still recognised.
_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)(?:-\d+-[0-9a-f]+)?$")
# Create, never open an existing file, never follow a link (O_NOFOLLOW is missing on Windows).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0)


def temp_path_for(path: PathLike) -> Path:
    """A fresh temporary name for a save to ``path``: ``.<name>.tmp-<pid>-<thread>-<random>``.

    Unique per call, so two threads or processes saving the same file never share a temp file.

    >>> temp_path_for("runs/last.pt").name  # doctest: +SKIP
    '.last.pt.tmp-4242-139871-9f2c61ab'
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}-"
                          f"{secrets.token_hex(4)}")


def _create_new(path: str, flags: int) -> int:
    """``open``'s opener for a new file: refuses one that exists, never writes through a link."""
    return os.open(path, _CREATE_NEW, 0o666)


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
    try:
        if path.is_dir():
            raise CheckpointError(path, _("this is a folder"), _("Give a file name, e.g. runs/last.pt."))
        path.parent.mkdir(parents=True, exist_ok=True)
    except (OSError, ValueError) as exc:
        raise _os_error(path, exc, "write") from None
    remove_stale_temps(path.parent)
    tmp, created = temp_path_for(path), False
    try:
        # O_EXCL | O_NOFOLLOW: a file or link planted under this name is never written through.
        with open(tmp, "wb", opener=_create_new) as f:
            created = True
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # replaces a link at ``path`` itself, never its target
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if _disk_full(exc):
            raise _disk_full_error(path, write) from None
        if isinstance(exc, OSError) or (isinstance(exc, ValueError) and "null byte" in str(exc)):
            raise _os_error(path, exc, "write") from None
        raise
    _fsync_dir(path.parent)


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, or torch's zip writer noticing a short write (``unexpected pos``)."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("unexpected pos" in text or "No space left" in text)


class _Counter:
    """A write-only sink that only counts bytes: how big the file would have been."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self.size += size
        return size

    def flush(self) -> None:
        pass


def _disk_full_error(path: Path, write: Callable[[BinaryIO], Any]) -> CheckpointError:
    counter = _Counter()
    try:
        write(counter)  # type: ignore[arg-type]
        needed = _("needs {size}, ").format(size=_size(counter.size))
    except Exception:  # a writer that needs a real file (seek, fileno): size unknown
        needed = ""
    free = _size(shutil.disk_usage(path.parent).free)
    return CheckpointError(
        path, _("the disk is full: the file {needed}{free} free in {parent}").format(
                  needed=needed, free=free, parent=path.parent),
        _("Free some space (delete old checkpoints or runs) or save to another disk. The previous "
          "version of the file, if any, is intact; nothing was half-written."))


def _size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError(_("unreachable"))


def _process_exists(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there: keep its temps
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # exists under another user, or cannot tell: keep
        return True
    return True


def remove_stale_temps(folder: PathLike) -> list[Path]:
    """Delete the ``.<name>.tmp-<pid>`` files of saves whose process no longer runs (kill -9).

    Each save and ``load_checkpoint`` calls it for its folder; temps of running processes stay.

    >>> remove_stale_temps("runs/pipeline")  # doctest: +SKIP
    [PosixPath('runs/pipeline/.last.pt.tmp-4242')]
    """
    removed = []
    with contextlib.suppress(OSError, ValueError):
        for entry in os.scandir(folder):
            found = _TEMP_NAME.match(entry.name)
            if not found:
                continue
            # A link named like a temp file was planted (saves never make links): remove the
            # link itself, never what it points to. Other non-files (folders, pipes) stay.
            link = entry.is_symlink()
            if not link and not entry.is_file(follow_symlinks=False):
                continue
            pid = int(found.group(1))
            if link or (pid != os.getpid() and not _process_exists(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _lock(file: IO[str]) -> None:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt

        file.seek(0)
        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


class FolderLock:
    """One training run per checkpoint folder: a second ``FolderLock`` on it refuses, naming the
    process that holds it. The operating system drops the lock when that process ends, even by
    kill -9, so a crash never leaves the folder locked.

    >>> with FolderLock("runs/pipeline"):  # doctest: +SKIP
    ...     fit(...)
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self._file: IO[str] | None = None

    def acquire(self) -> FolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise CheckpointError(self.folder, _("this is a file, not a folder"),
                                  _("Pass a folder for the checkpoints, e.g. runs/pipeline."))
        lock = self.folder / LOCK_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # Never through a link: a planted .lock -> /some/file must not be written into.
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
            file = open(fd, "r+")  # noqa: SIM115 - held until release()
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:  # a pipe, or a hard link
                file.close()
                raise CheckpointError(lock, _("it is not a plain file of its own (a pipe, device or "
                                              "hard link)"), _("Delete it (rm {lock}) and run again.").format(
                                                                 lock=lock))
        except OSError as exc:
            if exc.errno == errno.ELOOP or lock.is_symlink():
                raise CheckpointError(lock, _("it is a symbolic link, not the run's lock file"),
                                      _("Nothing was written through it. Delete the link (rm {lock}) or "
                                        "pass another folder.").format(lock=lock)) from None
            raise CheckpointError(self.folder, _("cannot write in this folder ({type}: {first_line})").format(
                                                   type=type(exc).__name__, first_line=_first_line(exc)),
                                  _("Pass a folder you may write to.")) from None
        except ValueError as exc:
            raise _os_error(self.folder, exc, "write") from None
        try:
            _lock(file)
        except OSError:
            file.seek(0)
            owner = file.read().strip() or _("another process")
            file.close()
            raise CheckpointError(self.folder, _("another run is using this folder ({owner})").format(
                                                   owner=owner),
                                  _("Wait until it ends or stop it, or pass another folder; two runs in "
                                    "one folder would overwrite each other's last.pt and best.pt.")) from None
        file.seek(0)
        file.truncate()
        file.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
