"""Show a pitfall's real error without stopping the notebook: ``expect_error``.

>>> with expect_error(ValueError, match="empty parameter list"):
...     torch.optim.SGD([], lr=0.1)
[expected error] ValueError: optimizer got an empty parameter list

The code inside runs for real and its real message is printed, short: the exception type and the
first lines of the message, no traceback frames, no local paths. The cell does not raise, so
*Run all* goes on in every client (JupyterLab, Colab, VS Code, papermill, nbval). The lesson stays
honest: when the code does **not** raise, or the message no longer matches, ``expect_error``
raises ``ExpectedErrorMissing``, and an exception of another type is not caught at all.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from helpers.i18n import _

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SITE_PACKAGES = re.compile(r"/[^\s'\"]*?/site-packages/")


class ExpectedErrorMissing(AssertionError):
    """The code under ``expect_error`` did not fail the way the lesson says it does."""


@dataclass
class Caught:
    """What ``expect_error`` caught; ``exception`` is set when the block has ended."""

    exception: BaseException | None = None


def _clean(text: str) -> str:
    """Drop terminal colours and local install paths from a message."""
    text = _ANSI.sub("", text)
    text = _SITE_PACKAGES.sub("site-packages/", text)
    cwd = os.getcwd().rstrip("/") + "/"
    return text.replace(cwd, "") if cwd != "/" else text


def short_error(exc: BaseException, *, lines: int = 6, width: int = 240) -> str:
    """``Type: message``, cut to ``lines`` lines of at most ``width`` characters each.

    >>> short_error(KeyError("fc.weight"))
    "KeyError: 'fc.weight'"
    """
    text = _clean(str(exc)).rstrip()
    if text[:1] == "\n":  # a message written as an indented block (safetensors): dedent it
        text = textwrap.dedent(text).strip()
    body = text.splitlines() or [""]
    shown = [line if len(line) <= width else line[: width - 2].rstrip() + " …" for line in body[:lines]]
    if len(body) > lines:
        shown.append(_("… ({count} more lines)").format(count=len(body) - lines))
    head = type(exc).__name__ + (": " + shown[0] if shown[0] else "")
    return "\n".join([head, *shown[1:]])


@contextmanager
def expect_error(exc_type: type[BaseException] | tuple[type[BaseException], ...],
                 match: str | None = None, *, lines: int = 6, width: int = 240) -> Iterator[Caught]:
    """Run the block, catch the expected ``exc_type`` and print its message in short.

    ``match`` is a regular expression that must be found in the message (``re.search``), so the
    lesson notices when a new torch says something else. Exceptions of other types pass through.

    >>> with expect_error(KeyError) as caught:
    ...     {}["fc.weight"]
    [expected error] KeyError: 'fc.weight'
    >>> type(caught.exception).__name__
    'KeyError'
    """
    caught = Caught()
    names = (exc_type.__name__ if isinstance(exc_type, type)
             else _(" or ").join(t.__name__ for t in exc_type))
    try:
        yield caught
    except exc_type as exc:
        caught.exception = exc
        if match is not None and not re.search(match, _clean(str(exc))):
            raise ExpectedErrorMissing(_(
                "expected {names} matching {match}, but the message was:\n{message}\nThe library "
                "may have changed its wording: update the match (and the prose around it)."
            ).format(names=names, match=repr(match),
                     message=short_error(exc, lines=lines, width=width))) from exc
        print("[expected error] " + short_error(exc, lines=lines, width=width))
        sys.stdout.flush()
    else:
        raise ExpectedErrorMissing(_(
            "expected {names}, but the code ran without an error. The behaviour this cell "
            "teaches has changed (a new library version?): update the lesson.").format(names=names))
