"""Small pieces the command lines share: Ctrl-C while starting, strict numbers, printable names.

>>> with started_cleanly("helpers.deploy"):  # Ctrl-C here: one line, exit code 130
...     import torch
>>> printable("a\\x1b[31mb")
'a\\\\x1b[31mb'

Importing this module is cheap (no torch), so a command line can import it before torch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from helpers.i18n import N_, _

# What a path may be: each part at most NAME_MAX bytes, the whole at most PATH_MAX (Linux values).
NAME_MAX, PATH_MAX = 255, 4096


@contextlib.contextmanager
def started_cleanly(module: str) -> Iterator[None]:
    """Ctrl-C during a command line's imports: one ``error:`` line and exit code 130, no traceback.

    Only when ``module`` runs as the program (``python -m``); an import from a notebook still sees
    the ``KeyboardInterrupt``.
    """
    try:
        yield
    except KeyboardInterrupt:
        if module != "__main__":
            raise
        print(_("error: interrupted (Ctrl-C) while starting; nothing was done"), file=sys.stderr)
        raise SystemExit(130) from None


def whole_number(low: int, high: int, what: str = N_("a whole number")) -> Callable[[str], int]:
    """An argparse type: ASCII digits only (no ``'３'``), from ``low`` to ``high``.

    >>> whole_number(1, 1024)("64")
    64
    """
    def parse(text: str) -> int:
        try:
            value = ascii_int(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(_("expected {what} from {low} to {high} (digits 0-9), "
                                               "got {text!r}").format(
                what=_(what), low=low, high=high, text=printable(text))) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(_("expected {what} from {low} to {high}, got {value}").format(
                what=_(what), low=low, high=high, value=value))
        return value

    return parse


def ascii_int(text: str) -> int:
    """An argparse type: a whole number in ASCII digits (``int`` also takes ``'３'``); the range is
    checked later, where the message can say what the value is for.

    >>> ascii_int("-3")
    -3
    """
    digits = text.strip()
    body = digits[1:] if digits[:1] in "+-" else digits
    if not (body.isascii() and body.isdigit()) or len(body) > 12:
        raise argparse.ArgumentTypeError(_("expected a whole number written with the digits 0-9, "
                                           "got {text!r}").format(text=printable(text)))
    return int(digits)


def printable(name: str) -> str:
    """``name`` with control and other unprintable characters escaped as ``repr`` shows them.

    >>> printable("cat\\ndog")
    'cat\\\\ndog'
    """
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(exc: BaseException, *, lines: int = 4, width: int = 300) -> str:
    """The message on one line: its first ``lines`` lines (and a checkpoint error's advice), cut.

    >>> one_line(ValueError("bad\\nworse"))
    'bad worse'
    """
    def cut(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 2].rstrip() + " …"

    advice = getattr(exc, "advice", "") or ""
    reason = getattr(exc, "reason", None)  # a CheckpointError: path, reason, advice
    head = f"{getattr(exc, 'path', '')}: {reason}" if reason is not None else str(exc)
    body = [line for line in head.splitlines() if line.strip()]
    shown = [cut(line) for line in body[:lines]]
    if len(body) > lines:
        shown.append(_("… ({count} more lines)").format(count=len(body) - lines))
    return " ".join(shown + ([cut(advice)] if advice else []))


def path_problem(path: Path, option: str) -> str | None:
    """Why ``path`` cannot be a file name here (a null byte, a part or the whole too long), or None.

    >>> path_problem(Path("runs/" + "x" * 300), "--checkpoint-dir")
    '--checkpoint-dir: a part of the path has 300 bytes, more than the 255 a file name may have'
    """
    text = os.fspath(path)
    if "\x00" in text:
        return _("{option}: the path contains a null byte (\\x00)").format(option=option)
    longest = max((len(os.fsencode(part)) for part in Path(text).parts), default=0)
    if longest > NAME_MAX:
        return _("{option}: a part of the path has {longest} bytes, more than the {maximum} a "
                 "file name may have").format(option=option, longest=longest, maximum=NAME_MAX)
    if len(os.fsencode(text)) > PATH_MAX - 64:  # room for the file names inside the folder
        return _("{option}: the path is longer than {maximum} bytes").format(option=option,
                                                                             maximum=PATH_MAX - 64)
    return None


def refuse_bad_paths(parser: argparse.ArgumentParser, paths: dict[str, Path | None]) -> None:
    """``parser.error`` (exit 2, one line) for the first option whose path ``path_problem`` refuses.

    >>> refuse_bad_paths(parser, {"--checkpoint": args.checkpoint, "--output": args.output})
    """
    for option, path in paths.items():
        problem = path_problem(path, option) if path is not None else None
        if problem:
            parser.error(problem)


__all__ = ["ascii_int", "one_line", "path_problem", "printable", "refuse_bad_paths", "started_cleanly",
           "whole_number"]
