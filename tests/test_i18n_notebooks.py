"""tools.i18n_notebooks: one source, two editions. Small synthetic chapters in tmp_path show that a
changed English cell is named stale, a changed code token fails, a translated comment passes and
untranslated cells are listed; the real chapters are checked wherever a translation exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from tools import i18n_notebooks as tool
from tools.i18n_notebooks import Chapter, build, check, code_tokens, extract, main

ROOT = Path(__file__).resolve().parents[1]
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/o/course/blob/main/notebooks/01_demo.ipynb)")
CELLS = [
    ("markdown", "aa000001", BADGE + "\n\n# 1. Demo\n\nA tiny chapter."),
    ("code", "aa000002", "import torch\n\nx = torch.zeros(2)  # two zeros\nx.shape"),
    ("code", "aa000003", "y = x + 1\ny"),
    ("markdown", "aa000004", "## Summary\n\nWe added one."),
    ("code", "aa000005", "# NBVAL_IGNORE_OUTPUT\nprint(y)  # noqa: T201"),
]
CHINESE = {
    "aa000001": BADGE + "\n\n# 1. 示例\n\n一个很小的章节。",
    "aa000002": "import torch\n\nx = torch.zeros(2)  # 两个 0\nx.shape",
    "aa000004": "## 小结\n\n我们加了 1。",
}


def _notebook(cells) -> dict:
    return {"cells": [{"cell_type": kind, "id": cell_id, "metadata": {}, "source": source,
                       **({"execution_count": 1, "outputs": [{"output_type": "stream",
                                                                "name": "stdout", "text": "out\n"}]}
                          if kind == "code" else {})} for kind, cell_id, source in cells],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                        "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}


def _write(path: Path, nb: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tool.dumps(nb), encoding="utf-8")


def _translate(po: Path, translations: dict[str, str]) -> None:
    """What a translator does in a PO editor: fill msgstr, clear fuzzy."""
    found = tool.read_translations(po)
    for cell_id, text in translations.items():
        found.entries[cell_id].translation = text
        found.entries[cell_id].fuzzy, found.entries[cell_id].previous = False, None
    tool.write_translations(po, "zh", found)


def _cells(path: Path) -> dict[str, str]:
    return {c["id"]: tool.source_of(c) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]}


@pytest.fixture
def chapter(tmp_path) -> Chapter:
    english = tmp_path / "notebooks" / "01_demo.ipynb"
    _write(english, _notebook(CELLS))
    return Chapter.of(english, "zh", tmp_path)


@pytest.fixture
def translated(chapter) -> Chapter:
    extract(chapter)
    _translate(chapter.po, CHINESE)
    assert build(chapter) == []
    return chapter


def _edit_english(chapter: Chapter, cell_id: str, source: str) -> None:
    nb = json.loads(chapter.english.read_text(encoding="utf-8"))
    next(c for c in nb["cells"] if c["id"] == cell_id)["source"] = source
    _write(chapter.english, nb)


def _edit_translated(chapter: Chapter, cell_id: str, old: str, new: str) -> None:
    nb = json.loads(chapter.translated.read_text(encoding="utf-8"))
    cell = next(c for c in nb["cells"] if c["id"] == cell_id)
    assert old in tool.source_of(cell)
    cell["source"] = tool.source_of(cell).replace(old, new)
    _write(chapter.translated, nb)


def test_code_is_compared_without_comments():
    english = "x = torch.zeros(2)  # two zeros\nif x.any():\n    y = 1\n"
    assert code_tokens(english) == code_tokens("x = torch.zeros(2)  # 两个 0\nif x.any():\n"
                                               "    # 不会发生\n    y = 1\n")
    for changed in ("x = torch.zeros(3)  # two zeros\nif x.any():\n    y = 1\n",  # a literal
                    "x = torch.ones(2)\nif x.any():\n    y = 1\n",  # a name
                    "x=torch.zeros(2)\nif x.any():\n    y = 1\n",  # spacing
                    "x = torch.zeros(2)\nif x.any():\n  y = 1\n"):  # indentation
        assert code_tokens(changed) != code_tokens(english), changed
    assert code_tokens("f()  # NBVAL_IGNORE_OUTPUT") != code_tokens("f()  # 忽略输出")
    assert code_tokens("f()  # 调用 noqa: B018") == code_tokens("f()  # call noqa: B018")


def test_extract_lists_every_cell_to_translate_and_check_names_them_missing(chapter, capsys):
    assert extract(chapter) == {"translated": 0, "stale": 0, "missing": 3, "obsolete": 0}
    with open(chapter.po, "rb") as file:
        entries = {m.context: m for m in read_po(file) if m.id}
    # markdown cells and the code cells with comments; a code cell without comments (tool
    # directives do not count) is copied
    assert sorted(entries) == ["aa000001", "aa000002", "aa000004"]
    assert entries["aa000002"].id == dict((i, s) for _, i, s in CELLS)["aa000002"]
    assert main(["check", "--root", str(chapter.po.parents[2])]) == 1
    out = capsys.readouterr().out
    for cell_id, line in [("aa000001", BADGE[:40]), ("aa000002", "import torch"),
                          ("aa000004", "## Summary")]:
        assert f"01_demo: cell {cell_id} missing: '{line}" in out
    assert "aa000003" not in out and "aa000005" not in out and "not built" in out
    assert main(["build", "--root", str(chapter.po.parents[2])]) == 1
    assert not chapter.translated.exists(), "build refuses while cells are missing"
    # --partial after the command (as a translator types it): written, with the English kept
    assert main(["build", "--partial", "1", "--root", str(chapter.po.parents[2])]) == 0
    assert chapter.translated.exists() and "## Summary" in chapter.translated.read_text(encoding="utf-8")


def test_build_writes_the_translated_sources_and_check_passes(translated, capsys):
    cells = _cells(translated.translated)
    assert list(cells) == ["aa000001", tool.LANGUAGE_CELL_ID, "aa000002", "aa000003", "aa000004",
                           "aa000005"]
    assert "# 1. 示例" in cells["aa000001"]
    assert "/notebooks/zh/01_demo.ipynb)" in cells["aa000001"], "the badge opens the Chinese chapter"
    assert cells[tool.LANGUAGE_CELL_ID].startswith('import os\n\nos.environ["COURSE_LANG"] = "zh"')
    assert cells["aa000003"] == "y = x + 1\ny"
    nb = json.loads(translated.translated.read_text(encoding="utf-8"))
    assert all(c["outputs"] == [] and c["execution_count"] is None
               for c in nb["cells"] if c["cell_type"] == "code"), "sources only: the run fills outputs"
    assert check(translated) == []
    assert main(["check", "1", "--root", str(translated.po.parents[2])]) == 0
    assert capsys.readouterr().out == "01_demo: ok\n"


def test_a_changed_english_markdown_cell_is_named_stale(translated, capsys):
    _edit_english(translated, "aa000004", "## Summary\n\nWe added one to every element.")
    problems = check(translated)
    assert [str(p) for p in problems] == [
        "01_demo: cell aa000004 stale (the English cell changed): '## Summary'"]
    assert main(["check", "--root", str(translated.po.parents[2])]) == 1
    assert "cell aa000004 stale" in capsys.readouterr().out
    # extract keeps the translation, marks it fuzzy and records the English it was made from
    assert extract(translated)["stale"] == 1
    text = translated.po.read_text(encoding="utf-8")
    assert '#, fuzzy\n#| msgctxt "aa000004"\n#| msgid ""\n#| "## Summary\\n"' in text
    assert "我们加了 1。" in text
    assert [p.detail for p in check(translated)] == ["marked fuzzy"]
    assert build(translated) != []  # refused ...
    assert "我们加了 1。" in _cells(translated.translated)["aa000004"]  # ... the old file is left
    assert [p.kind for p in build(translated, partial=True)] == ["stale"]
    assert _cells(translated.translated)["aa000004"] == "## Summary\n\nWe added one to every element."
    _translate(translated.po, {"aa000004": "## 小结\n\n我们给每个元素都加了 1。"})
    assert build(translated) == [] and check(translated) == []


def test_one_changed_code_token_in_the_chinese_notebook_fails(translated):
    _edit_translated(translated, "aa000002", "torch.zeros(2)", "torch.zeros(3)")
    assert [str(p) for p in check(translated)] == [
        "01_demo: cell aa000002 code differs (in 01_demo.ipynb: only comments may differ from "
        "the English): 'import torch'"]


def test_a_dropped_tool_directive_fails(translated):
    _edit_translated(translated, "aa000005", "# NBVAL_IGNORE_OUTPUT\n", "# 忽略输出\n")
    assert [(p.kind, p.cell_id) for p in check(translated)] == [("code differs", "aa000005")]


def test_a_dropped_cell_tag_fails(translated):
    nb = json.loads(translated.english.read_text(encoding="utf-8"))
    nb["cells"][2]["metadata"]["tags"] = ["raises-exception"]
    _write(translated.english, nb)
    assert [str(p) for p in check(translated)] == [
        "01_demo: cell aa000003 tags differ ([] instead of the English ['raises-exception']: run "
        "build): 'y = x + 1'"]
    assert build(translated) == [] and check(translated) == []


def test_a_comment_only_change_in_the_chinese_notebook_passes(translated):
    _edit_translated(translated, "aa000002", "# 两个 0", "# 两个零（形状为 (2,)）")
    _edit_translated(translated, "aa000003", "y = x + 1", "y = x + 1  # 加 1")
    assert check(translated) == []


def test_translated_code_that_changes_the_code_is_refused(translated):
    _translate(translated.po, {"aa000002": "import torch\n\nx = torch.zeros(2, 1)  # 两个 0\nx.shape"})
    problems = build(translated, partial=True)
    assert [p.kind for p in problems] == ["code differs"]
    assert "torch.zeros(2)  # 两个 0" in _cells(translated.translated)["aa000002"], "nothing written"
    assert [p.kind for p in check(translated)] == ["code differs"]


def test_a_hand_edited_markdown_cell_and_new_english_cells_are_reported(translated):
    _edit_translated(translated, "aa000004", "我们加了 1。", "我们加了一。")
    assert [(p.kind, p.cell_id) for p in check(translated)] == [("out of date", "aa000004")]
    build(translated)
    nb = json.loads(translated.english.read_text(encoding="utf-8"))
    nb["cells"].append({"cell_type": "markdown", "id": "aa000006", "metadata": {},
                        "source": "## Exercises"})
    _write(translated.english, nb)
    assert [(p.kind, p.cell_id) for p in check(translated)] == [
        ("missing", "aa000006"), ("not built", "aa000006")]


def test_extract_is_stable_and_keeps_deleted_cells_as_obsolete(translated):
    before = translated.po.read_bytes()
    assert extract(translated) == {"translated": 3, "stale": 0, "missing": 0, "obsolete": 0}
    assert translated.po.read_bytes() == before, "an unchanged chapter rewrites no byte"
    assert re.search(r'^"PO-Revision-Date: \d{4}-\d\d-\d\d \d\d:\d\d\+0000\\n"$',
                     before.decode(), re.M)
    nb = json.loads(translated.english.read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if c["id"] != "aa000004"]
    _write(translated.english, nb)
    assert extract(translated)["obsolete"] == 1
    assert '#~ msgctxt "aa000004"' in translated.po.read_text(encoding="utf-8")
    assert [(p.kind, p.cell_id) for p in check(translated)] == [("extra cell", "aa000004")]


def test_unknown_chapters_are_refused(tmp_path, chapter):
    with pytest.raises(SystemExit, match="no chapter '7' in .* \\(chapters: 01_demo\\)"):
        main(["check", "7", "--root", str(tmp_path)])


def test_the_real_chapters_are_in_step_with_their_translations():
    """Every chapter has its translation and its Chinese notebook, and both are current: an
    English cell edited since names its stale Chinese cell here; a code token changed in a
    Chinese notebook fails here too."""
    chapters = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(chapters) == 5
    untranslated = [p.name for p in chapters
                    if not (Chapter.of(p).po.exists() and Chapter.of(p).translated.exists())]
    assert untranslated == [], "run `make translations`, translate, then `make notebooks-zh`"
    problems = [str(p) for path in chapters for p in check(Chapter.of(path))]
    assert problems == []
    orphans = [p.name for p in [*(ROOT / "notebooks" / "zh").glob("*.ipynb"),
                                *(ROOT / "translations" / "zh").glob("*.po")]
               if not (ROOT / "notebooks" / (p.stem + ".ipynb")).exists()]
    assert orphans == [], "a translation whose English chapter is gone"


def test_the_po_file_is_standard_gettext(translated):
    """GNU msgfmt accepts it (where gettext is installed), and a fuzzy entry's old English
    survives being read and written again."""
    import shutil
    import subprocess

    _edit_english(translated, "aa000001", BADGE + "\n\n# 1. A demo\n\nA tiny chapter.")
    extract(translated)
    _edit_english(translated, "aa000001", BADGE + "\n\n# 1. The demo\n\nA tiny chapter.")
    extract(translated)  # changed twice: the translation was made from the first English
    entry = tool.read_translations(translated.po).entries["aa000001"]
    assert entry.fuzzy and entry.previous == CELLS[0][2] and "# 1. 示例" in entry.translation
    if shutil.which("msgfmt"):
        done = subprocess.run(["msgfmt", "--check", "-o", "/dev/null", str(translated.po)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_the_built_notebook_makes_the_helpers_speak_chinese(tmp_path, monkeypatch):
    """Its language cell is enough: the kernel is started without COURSE_LANG."""
    import nbformat
    from nbclient import NotebookClient

    from helpers.grade import _kernel_manager

    english = tmp_path / "notebooks" / "01_demo.ipynb"
    _write(english, _notebook([
        ("markdown", "bb000001", "# 1. Demo"),
        ("code", "bb000002", "from helpers.errors import expect_error\n\n"
                             "with expect_error(KeyError):\n    {}['fc.weight']"),
        ("code", "bb000003", "from helpers.exercises.common import require_logits\n\n"
                             "with expect_error(AssertionError):\n"
                             "    require_logits(torch.zeros(4, 10), 8, 10, 'your net')"),
    ]))
    chapter = Chapter.of(english, "zh", tmp_path)
    extract(chapter)
    _translate(chapter.po, {"bb000001": "# 1. 示例"})
    assert build(chapter) == []
    nb = nbformat.read(chapter.translated, as_version=4)
    nbformat.validate(nb)  # a valid notebook, cell ids included
    nb.cells[3].source = "import torch\n\n" + nb.cells[3].source  # for this test only
    monkeypatch.delenv("COURSE_LANG", raising=False)
    NotebookClient(nb, km=_kernel_manager(), timeout=120,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = ["".join(out.get("text", "") for out in cell.get("outputs", [])) for cell in nb["cells"]]
    assert text[2] == "[expected error] KeyError: 'fc.weight'\n"
    assert text[3] == ("[expected error] ExerciseError: 对一批 8 张图像，your net 返回了 4 行；"
                       "请保留批次维\n")
