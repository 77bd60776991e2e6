"""The Chinese chapters' prose is typeset as Chinese: full-width punctuation next to Chinese text,
and no line break inside a paragraph between two Chinese characters (Markdown renders such a
break as a space, which Chinese text does not have)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.i18n_notebooks import read_translations

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "translations" / "zh").glob("0*.po"))
HAN = "\u4e00-\u9fff"
HALF_WIDTH = re.compile(rf"[{HAN}][,;:?!(]|[,;:?!)][{HAN}]")
# A line that ends in Chinese, followed by one that goes on in Chinese (not a list item, table
# row, heading or quote: those start a block of their own).
SOFT_BREAK = re.compile(rf"[{HAN}，。：；、（）「」]\n[ \t]*(?![-*+|#>]|\d+\.)[{HAN}（「]")


def prose(markdown: str) -> str:
    """The text a reader sees as prose: code blocks and spans and link targets replaced."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "`code`", text)
    return re.sub(r"\]\([^)\s]*\)", "]", text)


def markdown_entries(path: Path) -> list[tuple[str, str]]:
    entries = read_translations(path).entries.values()
    return [(e.cell_id, e.translation) for e in entries if e.note.startswith("markdown") and e.translation]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_full_width_punctuation_next_to_chinese(path):
    found = [f"{cell}: {text[max(0, m.start() - 12):m.end() + 12]!r}"
             for cell, markdown in markdown_entries(path)
             for text in [prose(markdown)] for m in HALF_WIDTH.finditer(text)]
    assert not found, "use ，。：；？！（） next to Chinese text:\n" + "\n".join(found)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_line_break_inside_a_chinese_paragraph(path):
    found = [f"{cell}: {text[max(0, m.start() - 12):m.end() + 12]!r}"
             for cell, markdown in markdown_entries(path)
             for text in [prose(markdown)] for m in SOFT_BREAK.finditer(text)]
    assert not found, "join the lines of a paragraph (one line per paragraph):\n" + "\n".join(found)


def test_the_checks_catch_what_they_describe():
    assert HALF_WIDTH.search(prose("保存权重,然后加载"))
    assert not HALF_WIDTH.search(prose("保存权重，然后 `f(a, b)`"))
    assert SOFT_BREAK.search("先保存\n再加载") and not SOFT_BREAK.search("先保存。\n- 再加载")
