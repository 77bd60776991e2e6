"""The error type, the shared constants and the advice texts of ``helpers.checkpoint``.

>>> str(CheckpointError("w.pt", "the file is empty (0 bytes)"))
'w.pt: the file is empty (0 bytes)'
"""

from __future__ import annotations

import errno
import os
import reprlib
from pathlib import Path
from typing import NamedTuple

from helpers.i18n import N_, _

FORMAT = "helpers.checkpoint/1"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
WEIGHT_KEYS = ("model", "model_state_dict", "state_dict")
# Top-level keys of a checkpoint written by save_checkpoint; any other key is a user extra.
RESERVED_KEYS = frozenset({"format", "epoch", "start_epoch", "model", "optimizer", "scheduler",
                           "scaler", "rng"})

PathLike = str | os.PathLike
_SHORT = reprlib.Repr()  # short reprs of user values in messages and summaries
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 50, 70, 4, 3

# The advice texts are translated where a CheckpointError is built (helpers.i18n).
DAMAGED_ADVICE = N_(
    "If the file was cut off (a crash or a full disk during a plain torch.save, an interrupted "
    "copy or download), use an earlier checkpoint or copy it again. Files written by "
    "helpers.checkpoint are replaced atomically, so a crash while saving leaves the previous "
    "version intact.")
UNSAFE_ADVICE = N_(
    "Loading a pickle can run arbitrary code, so torch.load with weights_only=True (the default "
    "since torch 2.6) and these helpers refuse it; a whole model saved with torch.save(model) "
    "looks exactly like this. If you made the file yourself or trust its source, load it on "
    "purpose with load_whole_model(path, trusted=True) or load_weights(model, path, "
    "trusted=True), then re-save only the weights with save_weights(model, path).")
PLAIN_TYPES_ADVICE = N_(
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
        advice = _(advice) if advice else advice  # a shared advice constant (N_) in the reader's language
        self.path, self.reason, self.advice = Path(path), reason, advice
        super().__init__(f"{path}: {reason}" + (f"\n{advice}" if advice else ""))


class IncompatibleKeys(NamedTuple):
    """The ``missing_keys`` / ``unexpected_keys`` report of ``load_state_dict``."""

    missing_keys: list[str]
    unexpected_keys: list[str]



def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 160 else line[:157] + "..."


def _os_error(path: PathLike, exc: BaseException, doing: str = "read") -> CheckpointError:
    """A ``CheckpointError`` that says what an ``OSError`` (or a null byte) means for ``path``.

    >>> str(_os_error("x/w.pt", FileNotFoundError(2, "No such file")))  # doctest: +ELLIPSIS
    'x/w.pt: no such checkpoint file (looked in .../x)...'
    """
    if isinstance(exc, ValueError):  # os functions refuse a name with \x00 this way
        return CheckpointError(path, _("the file name contains a null byte (\\x00)"),
                               _("Check how the name was built; a path cannot contain \\x00."))
    code = getattr(exc, "errno", None)
    where = os.path.abspath(os.path.dirname(os.fspath(path)) or ".")
    if isinstance(exc, FileNotFoundError):
        if doing == "read":
            return CheckpointError(path, _("no such checkpoint file (looked in {where})").format(
                where=where), _("Check the name and the folder, or train and save first."))
        return CheckpointError(path, _("no such folder for it (looked in {where})").format(where=where),
                               _("Create the folder first."))
    verb = _("read") if doing == "read" else _("write") if doing == "write" else doing
    if isinstance(exc, PermissionError):
        return CheckpointError(path, _("permission denied: this user may not {doing} it").format(
                                         doing=verb),
                               _("Fix the permissions (chmod) or use a file and folder of your own."))
    if code == errno.ENAMETOOLONG:
        return CheckpointError(path, _("the name is too long for the file system (each part of a path "
                                       "may have at most 255 bytes)"), _("Use a shorter name."))
    if code == errno.ELOOP:
        return CheckpointError(path, _("it is a symbolic link loop (a link that leads back to itself)"),
                               _("Replace the link with the real file, or pass the file it should "
                                 "point to."))
    if code == errno.ENOTDIR:
        return CheckpointError(path, _("a part of the path is a file, not a folder"),
                               _("Check the folders in the path."))
    strerror = getattr(exc, "strerror", None) or _first_line(exc)
    return CheckpointError(path, _("cannot {doing} it ({type}: {strerror})").format(
                                     doing=verb, type=type(exc).__name__, strerror=strerror),
                           _("Check the path, the disk and the permissions."))
