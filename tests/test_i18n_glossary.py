"""The Chinese edition uses one word per idea: translations/zh/glossary.tsv fixes each term.

- Every translated text (the chapters' PO files and the helpers' catalog) avoids the renderings the
  glossary lists under "avoid".
- Where an English cell uses a term that comes from the source article (source ``seed``), its
  translation uses the article's own word, so a reader of 深入浅出PyTorch meets the same vocabulary.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tools.i18n_notebooks import comments

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "translations" / "zh" / "glossary.tsv"
CATALOGS = sorted((ROOT / "translations" / "zh").glob("*.po")) + [
    ROOT / "helpers" / "locale" / "zh" / "LC_MESSAGES" / "helpers.po"]
COLUMNS = ["english", "chinese", "avoid", "source", "note"]


def glossary() -> list[dict[str, str]]:
    lines = [line for line in GLOSSARY.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    return list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))


def translated(path: Path) -> list[tuple[str, str, str]]:
    """(where, English, Chinese) of every translated, current entry of a PO file."""
    with open(path, "rb") as file:
        catalog = read_po(file)
    rows = []
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        english = message.id if isinstance(message.id, str) else message.id[0]
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        code = any(note.startswith("code cell") for note in message.auto_comments)
        for chinese in strings:
            if chinese and code:  # a code cell: only its comments are translated text
                english, chinese = " ".join(comments(english)), " ".join(comments(chinese))
            if chinese:
                rows.append((f"{path.name} [{message.context or english[:40]!r}]", english, chinese))
    return rows


def test_glossary_is_well_formed():
    text = GLOSSARY.read_text(encoding="utf-8")
    header = next(line for line in text.splitlines() if line and not line.startswith("#"))
    assert header.split("\t") == COLUMNS
    terms = glossary()
    assert len(terms) >= 40, len(terms)
    for row in terms:
        assert None not in row and all(row[c] is not None for c in COLUMNS), f"wrong column count: {row}"
        assert row["english"] and row["chinese"], row
        assert row["source"] in {"seed", "course", "PyTorch docs", "torchvision docs", "Jupyter"}, row
        for word in filter(None, row["avoid"].split(",")):
            assert word.strip() not in row["chinese"], f"{row['english']}: avoids its own term"
    english = [row["english"] for row in terms]
    assert len(english) == len(set(english)), "a term is listed twice"


@pytest.mark.parametrize("path", CATALOGS, ids=lambda p: p.name)
def test_translations_avoid_the_words_the_glossary_rules_out(path):
    avoid = {word.strip(): row for row in glossary() for word in row["avoid"].split(",") if word.strip()}
    found = [f"{where}: {word!r} (use {row['chinese']!r} for {row['english']!r})"
             for where, _, chinese in translated(path) for word, row in avoid.items() if word in chinese]
    assert not found, "\n".join(found)


def test_the_source_articles_terms_keep_its_words():
    seed = [row for row in glossary() if row["source"] == "seed"]
    assert {"权重", "前缀", "断点续训", "模型定义", "部署"} <= {row["chinese"] for row in seed}
    found = []
    for path in CATALOGS[:-1]:  # the chapters; the helpers' messages are checked for avoid-words
        for where, english, chinese in translated(path):
            prose = re.sub(r"`[^`]*`|\]\([^)]*\)", "", english)  # not inside code or link URLs
            for row in seed:
                used = re.search(rf"\b{re.escape(row['english'])}\b", prose, re.I)
                if used and row["chinese"] not in chinese:
                    found.append(f"{where}: {row['english']!r} without {row['chinese']!r}")
    assert not found, "\n".join(found)
