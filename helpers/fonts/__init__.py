"""The font of the Chinese edition's diagrams: a Noto Sans CJK SC subset shipped in the package.

>>> with chinese_labels():  # COURSE_LANG=zh: Latin from DejaVu Sans, hanzi from the subset
...     fig = containers()

Nothing is downloaded and nothing is installed on the system: the font file is registered with
matplotlib's font manager in this process, the first time a Chinese diagram is drawn. English
diagrams are drawn exactly as before (no font list is set). The subset (GB2312 level 1, ASCII,
CJK punctuation and the catalog's characters, SIL OFL 1.1: ``OFL.txt``) is made by
``tools/font_subset.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path

from helpers.i18n import language

#: The shipped subset and the family name it registers under.
FONT_FILE = Path(__file__).resolve().with_name("NotoSansSC-course.otf")
FAMILY = "Noto Sans SC Course"


@functools.cache
def register() -> str:
    """Make the shipped font known to matplotlib (once per process); returns its family name.

    >>> register()
    'Noto Sans SC Course'
    """
    from matplotlib import font_manager, ft2font

    if not FONT_FILE.is_file():
        raise FileNotFoundError(f"the Chinese diagrams' font {FONT_FILE} is missing: reinstall "
                                "the course package (pip install --force-reinstall .)")
    manager = font_manager.fontManager
    # One weight ships (a bold face would double the size): bold labels take the regular hanzi,
    # registered under every weight so that findfont does not log "Failed to find font weight".
    regular = font_manager.ttfFontProperty(ft2font.FT2Font(str(FONT_FILE)))
    manager.ttflist += [dataclasses.replace(regular, weight=weight)
                        for weight in (100, 200, 300, 500, 600, 700, 800, 900)]
    manager.addfont(str(FONT_FILE))  # the regular entry; also empties findfont's cache
    return FAMILY


def families(generic: str = "sans-serif") -> str | list[str]:
    """The font family for text of the ``generic`` kind in the current language.

    English: ``generic`` itself. Chinese: ``generic`` first (DejaVu's Latin letters and digits,
    as in English), then the shipped CJK font for every glyph it lacks.

    >>> families("monospace")  # ['monospace', 'Noto Sans SC Course'] with COURSE_LANG=zh
    'monospace'
    """
    if language() == "en":
        return generic
    return [generic, register()]


@contextlib.contextmanager
def chinese_labels() -> Iterator[None]:
    """Within it, text created by matplotlib falls back to the CJK font (a no-op in English).

    >>> with chinese_labels():
    ...     fig.text(0.5, 0.5, "模型")
    """
    if language() == "en":
        yield
        return
    import matplotlib

    with matplotlib.rc_context({"font.family": families("sans-serif")}):
        yield
