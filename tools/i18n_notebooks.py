"""The Chinese edition of the chapters, built from the English notebooks and one PO file per chapter.

    python -m tools.i18n_notebooks extract [CHAPTER ...]            # translations/zh/NN_name.po
    python -m tools.i18n_notebooks build [--partial] [CHAPTER ...]  # notebooks/zh/NN_name.ipynb
    python -m tools.i18n_notebooks check [CHAPTER ...]              # exit 1 on any problem

The English notebooks are the source. A chapter's translations live in a gettext PO file, one entry
per cell: ``msgctxt`` is the cell id, ``msgid`` the English source the translation was made from,
``msgstr`` the Chinese source, so translators can use any PO editor and the English is recorded.

- Markdown cells are translated; every non-empty one needs an entry.
- Code cells are the English code: only comments may be translated. A code cell with comments
  gets an entry (its ``msgstr`` may keep some English comments); compared without comments
  (``tokenize``, directives such as ``# noqa`` and ``NBVAL_*`` kept), the Chinese code must equal
  the English, or ``build`` refuses and ``check`` fails.
- ``extract`` keeps every translation; an entry whose English changed is marked ``fuzzy`` with the
  old English as ``#| msgid`` (translators see the diff); a deleted cell's entry becomes obsolete.
- A fuzzy entry, or one whose ``msgid`` is not the English cell any more, is *stale*; a needed
  entry that is absent or empty is *missing*. ``check`` names each (chapter, cell id, first line).
- ``build`` writes sources only (outputs come from running the notebook with
  ``tools.run_notebooks``), points Colab badges at the translated chapter, and adds one code cell
  after the title that sets ``COURSE_LANG=zh``, so the helpers speak Chinese in every client.
  It refuses while any cell is stale or missing, unless ``--partial`` (those cells
  then keep their English text and are listed).

CHAPTER is a number (``3``, ``03``), a name (``03_saving_and_loading``) or the English notebook's
path. Default: every chapter for ``extract``; for ``build``/``check`` every chapter with a
translation file or a Chinese notebook.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import re
import sys
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from babel.messages.pofile import escape, read_po, unescape

ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ("zh",)
HEADER = ("# {language} translations of the course's chapters: one entry per cell, msgctxt = the cell id,\n"
          "# msgid = the English cell. Update with `python -m tools.i18n_notebooks extract` (keeps\n"
          "# every translation; a changed English cell becomes fuzzy); see that tool's docstring.")
LANGUAGE_NAMES = {"zh": "Chinese"}
#: Colab badges of a chapter open the same chapter of the translated edition.
COLAB = re.compile(r"(https://colab\.research\.google\.com/github/[^\s)\"']*/notebooks/)"
                   r"(\d\d_[\w-]+\.ipynb)")
#: The cell ``build`` adds to every Chinese notebook (after the title), in this exact form.
LANGUAGE_CELL_ID = "course-lang"
LANGUAGE_CELL = {
    "zh": 'import os\n\nos.environ["COURSE_LANG"] = "zh"  # 课程辅助函数（helpers）的提示信息改用中文显示',
}
#: Comment parts that change how tools treat the cell: kept and compared like code.
DIRECTIVE = re.compile(r"NBVAL_[A-Z_]+|noqa(?::\s*[A-Z]+\d+(?:\s*,\s*[A-Z]+\d+)*)?"
                       r"|type:\s*ignore(?:\[[\w\-, ]+\])?|fmt:\s*(?:on|off|skip)|pragma:\s*no cover")


@dataclass(frozen=True)
class Problem:
    """One cell that keeps an edition from being built or checked clean."""

    kind: str  # stale, missing, code differs, out of date, not built, extra cell
    chapter: str
    cell_id: str
    first_line: str
    detail: str = ""

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.chapter}: cell {self.cell_id} {self.kind}{detail}: {self.first_line!r}"


@dataclass(frozen=True)
class Chapter:
    """The three files of one chapter in one language."""

    english: Path
    po: Path
    translated: Path

    @property
    def name(self) -> str:
        return self.english.stem

    @classmethod
    def of(cls, english: Path, lang: str = "zh", root: Path = ROOT) -> Chapter:
        return cls(english, root / "translations" / lang / f"{english.stem}.po",
                   root / "notebooks" / lang / english.name)


# Cells -----------------------------------------------------------------------------------------

def source_of(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def first_line(source: str, width: int = 72) -> str:
    """The first non-blank line of a cell, cut to ``width`` characters.

    >>> first_line("\\n# 2. Modifying models\\nmore")
    '# 2. Modifying models'
    """
    line = next((line.strip() for line in source.splitlines() if line.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def _python(source: str) -> str:
    """IPython syntax (``%magic``, ``!cmd``) as the Python the kernel runs; plain code unchanged."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with the notebook tools
        return source
    return TransformerManager().transform_cell(source)


def comments(source: str) -> list[str]:
    """The comments of a code cell other than tool directives (what a translator may translate).

    >>> comments("x = 1  # the input\\ny = 2  # noqa: F841")
    ['# the input']
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(_python(source)).readline))
    except (tokenize.TokenError, SyntaxError):
        return re.findall(r"#.*", source)
    return [t.string for t in tokens if t.type == tokenize.COMMENT
            and DIRECTIVE.sub("", t.string).strip("# \t")]


def code_tokens(source: str) -> list[tuple[Any, ...]]:
    """The cell's code without comments: (type, text, column) per token, directives kept.

    Blank lines and comment lines do not count; everything else (names, literals, spacing within
    a line, indentation) does.

    >>> code_tokens("x = 1  # one") == code_tokens("x = 1  # 一")
    True
    """
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(_python(source)).readline))
    except (tokenize.TokenError, SyntaxError):
        return [("UNTOKENIZABLE", source)]
    kept: list[tuple[Any, ...]] = []
    for token in tokens:
        if token.type == tokenize.NL:
            continue
        if token.type == tokenize.COMMENT:
            directives = tuple(DIRECTIVE.findall(token.string))
            if directives:
                kept.append(("DIRECTIVE", directives))
        elif token.type in (tokenize.NEWLINE, tokenize.DEDENT, tokenize.ENDMARKER):
            kept.append((token.type,))
        else:
            kept.append((token.type, token.string, token.start[1]))
    return kept


def tags(cell: dict[str, Any]) -> list[str]:
    """The cell's tags (they steer nbval and the clients, so both editions carry the same)."""
    return list(cell.get("metadata", {}).get("tags", []))


def needs_translation(cell: dict[str, Any]) -> bool:
    """Markdown cells with text, and code cells with comments, get a translation entry."""
    source = source_of(cell)
    if not source.strip():
        return False
    if cell["cell_type"] == "markdown":
        return True
    return cell["cell_type"] == "code" and bool(comments(source))


# PO files --------------------------------------------------------------------------------------

@dataclass
class Entry:
    """One cell's translation: ``english`` is the msgid, ``previous`` the English it was made
    from while the entry is fuzzy (``#| msgid``)."""

    cell_id: str
    english: str
    translation: str = ""
    fuzzy: bool = False
    previous: str | None = None
    note: str = ""


@dataclass
class Translations:
    """A chapter's PO file: the entries by cell id, and those of deleted cells (obsolete)."""

    entries: dict[str, Entry]
    obsolete: list[Entry]
    revised: str | None = None  # the header's PO-Revision-Date (a PO editor updates it)


def _previous_ids(text: str) -> dict[str, str]:
    """The ``#| msgid`` (previous English) of each fuzzy entry, by the entry's msgctxt.

    Babel's reader skips ``#|`` lines, so they are read here, as GNU gettext writes them.
    """
    found = {}
    for block in re.split(r"\n\s*\n", text):
        lines = block.splitlines()
        context = next((unescape(line[len("msgctxt "):]) for line in lines
                        if line.startswith("msgctxt ")), None)
        parts: list[str] = []
        keyword = None
        for line in lines:
            if not line.startswith("#|"):
                continue
            body = line[2:].strip()
            if body.startswith(("msgctxt ", "msgid_plural ", "msgid ")):
                keyword, body = body.split(" ", 1)
            if keyword == "msgid" and body.startswith('"'):
                parts.append(unescape(body))
        if context is not None and parts:
            found[context] = "".join(parts)
    return found


def read_translations(path: Path) -> Translations:
    """Read a chapter's PO file (Babel's reader: any PO editor's layout is fine)."""
    text = path.read_text(encoding="utf-8")
    with open(path, "rb") as file:
        catalog = read_po(file, abort_invalid=True)
    previous = _previous_ids(text)
    entries = {}
    for message in catalog:
        if message.id and message.context:
            context = str(message.context)
            entries[context] = Entry(context, str(message.id), str(message.string or ""),
                                     message.fuzzy, previous.get(context),
                                     " ".join(message.auto_comments))
    obsolete = [Entry(str(m.context), str(m.id), str(m.string or ""), note=" ".join(m.auto_comments))
                for m in catalog.obsolete.values() if m.context]
    revised = re.search(r'^"PO-Revision-Date: ([^"\\]*)\\n"$', text, re.M)
    return Translations(entries, obsolete, revised.group(1) if revised else None)


def _po_text(keyword: str, text: str, prefix: str = "") -> list[str]:
    """``keyword "text"`` in PO syntax, one quoted line per line of the text (no wrapping)."""
    lines = text.splitlines(keepends=True)
    if len(lines) <= 1:
        return [f"{prefix}{keyword} {escape(text)}"]
    return [f'{prefix}{keyword} ""', *(f"{prefix}{escape(line)}" for line in lines)]


def write_translations(path: Path, lang: str, translations: Translations) -> None:
    """Write a chapter's PO file in GNU gettext's layout (the revision date kept: no churn)."""
    name = LANGUAGE_NAMES[lang]
    revised = translations.revised or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M+0000")
    header = {"Project-Id-Version": "pytorch-model-engineering notebooks",
              "PO-Revision-Date": revised,
              "Report-Msgid-Bugs-To": "https://github.com/pytorch-model-engineering/course/issues",
              "Last-Translator": "the course authors", "Language-Team": f"{name} (the course authors)",
              "Language": lang, "MIME-Version": "1.0", "Content-Type": "text/plain; charset=UTF-8",
              "Content-Transfer-Encoding": "8bit", "Plural-Forms": "nplurals=1; plural=0;"}
    out = [HEADER.format(language=name), 'msgid ""', 'msgstr ""',
           *(escape(f"{key}: {value}\n") for key, value in header.items()), ""]
    for entry in translations.entries.values():
        out += [f"#. {entry.note}"] if entry.note else []
        if entry.fuzzy:
            out.append("#, fuzzy")
            if entry.previous is not None:
                out += [f"#| msgctxt {escape(entry.cell_id)}", *_po_text("msgid", entry.previous, "#| ")]
        out += [f"msgctxt {escape(entry.cell_id)}", *_po_text("msgid", entry.english),
                *_po_text("msgstr", entry.translation), ""]
    for entry in translations.obsolete:
        out += [f"#. {entry.note}"] if entry.note else []
        out += [f"#~ msgctxt {escape(entry.cell_id)}", *_po_text("msgid", entry.english, "#~ "),
                *_po_text("msgstr", entry.translation, "#~ "), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out[:-1]) + "\n", encoding="utf-8")


def _note(cell: dict[str, Any], index: int) -> str:
    if cell["cell_type"] == "code":
        return (f"code cell {index}: translate the comments only; the code must stay exactly as it "
                f"is")
    return f"{cell['cell_type']} cell {index}"


def extract(chapter: Chapter, lang: str = "zh") -> dict[str, int]:
    """Create or update the chapter's PO file from the English notebook; counts of its entries.

    >>> extract(Chapter.of(Path("notebooks/03_saving_and_loading.ipynb")))  # doctest: +SKIP
    {'translated': 120, 'stale': 2, 'missing': 5, 'obsolete': 1}
    """
    cells = json.loads(chapter.english.read_text(encoding="utf-8"))["cells"]
    old = read_translations(chapter.po) if chapter.po.exists() else Translations({}, [])
    before_by_id = dict(old.entries)
    entries: dict[str, Entry] = {}
    counts = dict.fromkeys(("translated", "stale", "missing", "obsolete"), 0)
    for index, cell in enumerate(cells, 1):
        source, cell_id = source_of(cell), str(cell.get("id", ""))
        before = before_by_id.pop(cell_id, None)
        if not (needs_translation(cell) or (before is not None and before.translation)):
            continue
        entry = Entry(cell_id, source, note=_note(cell, index))
        if before is not None and before.translation:
            entry.translation = before.translation
            entry.fuzzy = before.fuzzy or before.english != source
            if entry.fuzzy:  # the English the translation was made from, kept over re-extracts
                entry.previous = before.previous if before.fuzzy and before.previous else (
                    before.english if before.english != source else None)
        entries[cell_id] = entry
        counts["missing" if not entry.translation else "stale" if entry.fuzzy else "translated"] += 1
    obsolete = [Entry(e.cell_id, e.english, e.translation, note="a deleted cell")
                for e in before_by_id.values() if e.translation]
    counts["obsolete"] = len(obsolete)
    obsolete += [e for e in old.obsolete if e.cell_id not in entries
                 and e.cell_id not in {o.cell_id for o in obsolete}]
    write_translations(chapter.po, lang, Translations(entries, obsolete, old.revised))
    return counts


# Status, build, check ----------------------------------------------------------------------------

def translation_status(chapter: Chapter, cells: Sequence[dict[str, Any]],
                       translations: Translations | None) -> tuple[dict[str, str], list[Problem]]:
    """Each usable translation by cell id, and the stale/missing cells (code checked too)."""
    entries = translations.entries if translations is not None else {}
    usable: dict[str, str] = {}
    problems = []
    for cell in cells:
        cell_id, source = str(cell.get("id", "")), source_of(cell)
        entry = entries.get(cell_id)
        line = first_line(source)
        if entry is not None and entry.translation and (entry.fuzzy or entry.english != source):
            why = "marked fuzzy" if entry.english == source else "the English cell changed"
            problems.append(Problem("stale", chapter.name, cell_id, line, why))
        elif entry is not None and entry.translation:
            if cell["cell_type"] == "code" and code_tokens(entry.translation) != code_tokens(source):
                problems.append(Problem("code differs", chapter.name, cell_id, line,
                                        f"in {chapter.po.name}: only comments may be translated"))
            else:
                usable[cell_id] = entry.translation
        elif needs_translation(cell):
            problems.append(Problem("missing", chapter.name, cell_id, line))
    return usable, problems


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def edition(chapter: Chapter, lang: str = "zh", *,
            partial: bool = False) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The translated notebook (sources only), or None when a problem forbids it; the problems."""
    nb = json.loads(chapter.english.read_text(encoding="utf-8"))
    translations = read_translations(chapter.po) if chapter.po.exists() else None
    usable, problems = translation_status(chapter, nb["cells"], translations)
    if any(p.kind == "code differs" for p in problems) or (problems and not partial):
        return None, problems
    cells = []
    for cell in nb["cells"]:
        new = {key: copy.deepcopy(value) for key, value in cell.items()
               if key in ("cell_type", "id", "metadata", "attachments")}
        source = usable.get(str(cell.get("id", "")), source_of(cell))
        if cell["cell_type"] == "markdown":
            source = COLAB.sub(rf"\g<1>{lang}/\g<2>", source)
        new["source"] = _lines(source)
        if cell["cell_type"] == "code":
            new["execution_count"], new["outputs"] = None, []
        cells.append(new)
    language = {"cell_type": "code", "execution_count": None, "id": LANGUAGE_CELL_ID,
                "metadata": {}, "outputs": [], "source": _lines(LANGUAGE_CELL[lang])}
    cells.insert(1 if cells and cells[0]["cell_type"] == "markdown" else 0, language)
    return {**nb, "cells": cells}, problems


def dumps(nb: dict[str, Any]) -> str:
    """A notebook as the course writes it (nbformat's layout, keys sorted, UTF-8 as is)."""
    return json.dumps(nb, indent=1, sort_keys=True, separators=(",", ": "), ensure_ascii=False) + "\n"


def build(chapter: Chapter, lang: str = "zh", *, partial: bool = False) -> list[Problem]:
    """Write the chapter's translated notebook (sources only); the problems (nothing written
    when there are any, unless ``partial`` and none is a code difference).

    >>> build(Chapter.of(Path("notebooks/03_saving_and_loading.ipynb")))  # doctest: +SKIP
    []
    """
    nb, problems = edition(chapter, lang, partial=partial)
    if nb is not None:
        chapter.translated.parent.mkdir(parents=True, exist_ok=True)
        chapter.translated.write_text(dumps(nb), encoding="utf-8")
    return problems


def check(chapter: Chapter, lang: str = "zh") -> list[Problem]:
    """Every stale or missing translation, and every cell of the translated notebook whose code
    differs from the English or whose text is not what ``build`` writes from the PO file.

    >>> check(Chapter.of(Path("notebooks/03_saving_and_loading.ipynb")))  # doctest: +SKIP
    []
    """
    english = json.loads(chapter.english.read_text(encoding="utf-8"))["cells"]
    translations = read_translations(chapter.po) if chapter.po.exists() else None
    problems = [] if translations is not None else [
        Problem("missing", chapter.name, "-", "", f"no translation file {chapter.po.name}")]
    problems += translation_status(chapter, english, translations)[1]
    if not chapter.translated.exists():
        return [*problems, Problem("not built", chapter.name, "-", "",
                                   f"no {chapter.translated.name}: run build")]
    expected, _ = edition(chapter, lang, partial=True)
    wanted = {str(c["id"]): c for c in expected["cells"]} if expected is not None else {}
    named = {p.cell_id for p in problems}  # stale or missing already: not "out of date" too
    cells = json.loads(chapter.translated.read_text(encoding="utf-8"))["cells"]
    seen = [str(c.get("id", "")) for c in cells]
    order = [str(c.get("id", "")) for c in expected["cells"]] if expected is not None else seen
    for cell in cells:
        cell_id, source = str(cell.get("id", "")), source_of(cell)
        reference = next((c for c in english if str(c.get("id", "")) == cell_id), None)
        if cell_id == LANGUAGE_CELL_ID:
            if source != LANGUAGE_CELL[lang]:
                problems.append(Problem("out of date", chapter.name, cell_id, first_line(source),
                                        "the language cell was edited: run build"))
        elif reference is None or reference["cell_type"] != cell["cell_type"]:
            problems.append(Problem("extra cell", chapter.name, cell_id, first_line(source),
                                    "not in the English notebook: run build"))
        elif tags(cell) != tags(reference):
            problems.append(Problem("tags differ", chapter.name, cell_id, first_line(source),
                                    f"{tags(cell)} instead of the English {tags(reference)}: "
                                    f"run build"))
        elif cell["cell_type"] == "code":
            if code_tokens(source) != code_tokens(source_of(reference)):
                problems.append(Problem("code differs", chapter.name, cell_id,
                                        first_line(source_of(reference)),
                                        f"in {chapter.translated.name}: only comments may differ "
                                        f"from the English"))
        elif cell_id in wanted and cell_id not in named and source != source_of(wanted[cell_id]):
            problems.append(Problem("out of date", chapter.name, cell_id, first_line(source),
                                    f"not the text of {chapter.po.name}: edit the PO file, then "
                                    f"run build"))
    absent = [i for i in order if i not in seen]
    for cell_id in absent:
        cell = wanted.get(cell_id, {})
        problems.append(Problem("not built", chapter.name, cell_id, first_line(source_of(cell)),
                                "missing from the translated notebook: run build"))
    if not absent and [i for i in seen if i in order] != order:
        problems.append(Problem("out of date", chapter.name, "-", "",
                                "cells are in another order than the English: run build"))
    return problems


# Command line ------------------------------------------------------------------------------------

def chapters(names: Iterable[str], root: Path) -> list[Path]:
    """The English notebooks that ``names`` (numbers, names or paths) designate."""
    every = sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb":
            match = [p for p in every if p.name == path.name and path.parent.name != "zh"]
        elif name.isdigit():
            match = [p for p in every if p.name.startswith(f"{int(name):02d}_")]
        else:
            match = [p for p in every if p.stem == name]
        if len(match) != 1:
            known = ", ".join(p.stem for p in every) or "none"
            raise SystemExit(f"error: no chapter {name!r} in {root / 'notebooks'} (chapters: {known})")
        found.append(match[0])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.i18n_notebooks {extract,build,check} [--lang zh] [CHAPTER ...]``."""
    parser = argparse.ArgumentParser(prog="python -m tools.i18n_notebooks",
                                     description="Build and check the translated chapters.")
    parser.add_argument("command", choices=("extract", "build", "check"))
    parser.add_argument("chapters", nargs="*", help="numbers, names or English notebook paths")
    parser.add_argument("--lang", choices=LANGUAGES, default="zh")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    parser.add_argument("--partial", action="store_true",
                        help="build: keep the English text of stale or missing cells, list them")
    # Options anywhere: `build --partial 04` as well as `--partial build 04`.
    args = parser.parse_intermixed_args(argv)
    english = chapters(args.chapters, args.root)
    if not english:
        every = sorted((args.root / "notebooks").glob("[0-9][0-9]_*.ipynb"))
        english = every if args.command == "extract" else [
            p for p in every if Chapter.of(p, args.lang, args.root).po.exists()
            or Chapter.of(p, args.lang, args.root).translated.exists()]
    failed = False
    for path in english:
        chapter = Chapter.of(path, args.lang, args.root)
        if args.command == "extract":
            counts = extract(chapter, args.lang)
            print(f"{chapter.po.relative_to(args.root)}: " + ", ".join(
                f"{n} {kind}" for kind, n in counts.items()))
            continue
        if args.command == "build":
            problems = build(chapter, args.lang, partial=args.partial)
            refused = any(p.kind == "code differs" for p in problems) or (
                bool(problems) and not args.partial)
            verb = "not written" if refused else "written"
            print(f"{chapter.translated.relative_to(args.root)}: {verb}"
                  + (f", {len(problems)} cell(s) to fix:" if problems else ""))
        else:
            problems = check(chapter, args.lang)
            print(f"{chapter.name}: " + (f"{len(problems)} problem(s):" if problems else "ok"))
        for problem in problems:
            print(f"  {problem}")
        failed |= bool(problems) and (args.command == "check" or not args.partial
                                      or any(p.kind == "code differs" for p in problems))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
