"""Print measurements (losses, accuracies) so that readers see them and output checks skip them.

>>> print(f"test accuracy {measured(0.98765)}")
test accuracy ≈0.99

A number that comes out of training differs in its last digits from one CPU to the next (Intel vs
AMD, AVX-512 vs AVX2), and a few epochs of training turn that into ``0.98`` vs ``0.99``. Such a
number is a *measurement*: it is printed with the ``≈`` mark, ``notebooks/sanitize.cfg`` masks
exactly the marked number when nbval compares outputs, and the same cell asserts what the prose
claims about it (``assert test_acc >= 0.9``). Everything printed without the mark (shapes, keys,
counts, messages, schedule values) is a *fact* and is compared digit for digit.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable

#: The mark in front of every measured number; sanitize.cfg masks ``≈`` + the number after it.
MARK = "≈"


def _number(value: float, ndigits: int) -> str:
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{ndigits}f}"


def measured(value: float | Iterable[float], ndigits: int = 2) -> str:
    """``≈`` + ``value`` rounded to ``ndigits`` decimals; a sequence becomes ``≈[a, b, ...]``.

    >>> measured([0.5, 0.754])
    '≈[0.50, 0.75]'
    """
    if isinstance(value, Iterable) and not isinstance(value, str):
        return MARK + "[" + ", ".join(_number(v, ndigits) for v in value) + "]"
    return MARK + _number(value, ndigits)  # type: ignore[arg-type]


def percent(value: float, ndigits: int = 0) -> str:
    """A fraction as a measured percentage.

    >>> percent(0.9731)
    '≈97%'
    """
    return f"{MARK}{_number(100 * float(value), ndigits)}%"


def tolerate_narrow_console() -> None:
    """Let a command-line tool print ``≈`` on any console: where stdout's encoding lacks it (a
    Windows pipe in cp1252), the mark becomes ``?`` instead of raising ``UnicodeEncodeError``.

    >>> tolerate_narrow_console()  # first thing in main()
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
