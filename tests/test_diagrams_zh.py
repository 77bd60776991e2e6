"""The Chinese diagrams: Chinese labels, drawn with the font the package ships, no missing glyph.

The font is helpers/fonts/NotoSansSC-course.otf (tools/font_subset.py makes it); English diagrams
never touch it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import matplotlib
import pytest
import torch
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.pofile import read_po
from fontTools.ttLib import TTFont
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch import nn

from helpers import fonts
from helpers.diagrams import checkpoint_anatomy, containers, pipeline_flowchart, state_dict_tree
from helpers.i18n import _, set_language
from tools.font_subset import FAMILY, gb2312_level1, subset

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
PO = ROOT / "helpers" / "locale" / "zh" / "LC_MESSAGES" / "helpers.po"
#: The modules whose messages are diagram labels.
DIAGRAM_SOURCES = ("helpers/diagrams.py", "helpers/anatomy.py")
REGENERATE = "python -m tools.font_subset /path/to/NotoSansCJK-Regular.ttc (see CONTRIBUTING.md)"


def _checkpoint() -> dict:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    optimizer.step()
    scheduler.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "epoch": 2, "best_acc": 0.91,
            "rng": {"torch": torch.get_rng_state()}, "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}


#: Every diagram of the course, with inputs that show every kind of label.
DIAGRAMS = {
    "containers": containers,
    "state_dict_tree": lambda: state_dict_tree(["module.fc.weight", "module.fc.bias"]),
    "state_dict_tree (bare, cut)": lambda: state_dict_tree([f"l{i}.weight" for i in range(60)],
                                                           max_lines=5),
    "checkpoint_anatomy": lambda: checkpoint_anatomy(_checkpoint()),
    "checkpoint_anatomy (summary)": lambda: checkpoint_anatomy(
        "last.pt\nmodel: 4 tensors, first keys: fc.weight\nepochs done: 3, next epoch: 4"),
    "pipeline_flowchart": pipeline_flowchart,
}


@pytest.fixture(autouse=True)
def _language(monkeypatch):
    monkeypatch.delenv("COURSE_LANG", raising=False)
    set_language(None)
    yield
    set_language(None)


def draw_strictly(fig: Figure) -> bytes:
    """The notebook's PNG of ``fig``; a missing glyph or a font fallback is an error."""
    from IPython.core.pylabtools import print_figure

    logger = logging.getLogger("matplotlib.font_manager")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "Glyph 27169 (\N{...}) missing from font(s) ..."
            data = print_figure(fig, "png", bbox_inches="tight")
    finally:
        logger.removeHandler(handler)
    assert not records, [r.getMessage() for r in records]  # "findfont: Font family ... not found"
    return data


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


# Drawing in Chinese ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DIAGRAMS)
def test_each_diagram_draws_in_chinese_with_no_missing_glyph(name, monkeypatch):
    monkeypatch.setenv("COURSE_LANG", "zh")
    fig = DIAGRAMS[name]()
    assert draw_strictly(fig).startswith(b"\x89PNG")
    for text in fig.findobj(Text):
        if text.get_text():
            assert FAMILY in text.get_fontfamily(), (text.get_text(), text.get_fontfamily())


def test_a_character_the_fonts_lack_is_caught(monkeypatch):
    """The check above can fail: U+9F98 (龘) is in neither DejaVu Sans nor the subset."""
    monkeypatch.setenv("COURSE_LANG", "zh")
    fig = state_dict_tree(["fc.weight"], title="\u9f98")
    with pytest.raises(UserWarning, match=r"Glyph \d+ .* missing from"):  # "font(s) ...", 3.7: "current font"
        draw_strictly(fig)


def test_the_diagrams_show_the_catalogs_chinese(monkeypatch):
    monkeypatch.setenv("COURSE_LANG", "zh")
    shown = "\n".join(texts(containers()) + texts(pipeline_flowchart())
                      + texts(checkpoint_anatomy({"epoch": 2})) + texts(state_dict_tree(["w"])))
    for message in ("Where the layers live decides who writes forward and what PyTorch can see",
                    "NOT registered", "The life of a model, and the chapter that teaches each step",
                    "resume", "ch3, ch4", "(not saved)", "weights | resume state | bookkeeping"):
        assert _(message) in shown, message
    assert _("epochs done: {done}\nnext epoch: {next}").format(done=3, next=4) in shown
    assert _("state_dict: {count} keys (blue: tensors)").format(count=1) in shown
    # code and API names are the same in both editions
    for code in ("nn.Sequential", "for block in self.blocks: ...", "self.acts[activation]"):
        assert code in shown


def test_a_summary_and_a_dict_give_the_same_epoch_box(monkeypatch):
    monkeypatch.setenv("COURSE_LANG", "zh")
    from helpers.anatomy import parts_from_dict, parts_from_summary

    assert (parts_from_summary("last.pt\nepochs done: 3, next epoch: 4")["epoch"]
            == parts_from_dict({"epoch": 2})["epoch"])


# English stays as it was -------------------------------------------------------------------------

@pytest.mark.parametrize("name", DIAGRAMS)
def test_english_diagrams_do_not_use_the_cjk_font(name):
    fig = DIAGRAMS[name]()
    for text in fig.findobj(Text):
        assert FAMILY not in text.get_fontfamily(), text.get_text()
    draw_strictly(fig)


def test_families_follow_the_language(monkeypatch):
    assert fonts.families("monospace") == "monospace"
    monkeypatch.setenv("COURSE_LANG", "zh")
    assert fonts.families("monospace") == ["monospace", FAMILY]
    assert fonts.families() == ["sans-serif", FAMILY]


# The shipped font ----------------------------------------------------------------------------------

def diagram_translations(po: Path = PO) -> dict[str, str]:
    """The Chinese of every diagram label in the catalog (entries not yet translated are left
    out: tests/test_i18n.py names those)."""
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    ids = {message for source in DIAGRAM_SOURCES
           for _line, message, _c, _ctx in extract_from_file("python", str(ROOT / source),
                                                               keywords=keywords)}
    with open(po, "rb") as file:
        catalog = read_po(file)
    found = {}
    for message in ids:
        entry = catalog.get(message)
        if entry is not None and entry.string and not entry.fuzzy:
            found[message] = entry.string
    return found


def missing_characters(translations: dict[str, str], cmaps: list[set[int]]) -> dict[str, str]:
    """Per message, the characters of its translation that no font in ``cmaps`` has."""
    lacking = {}
    for message, text in translations.items():
        absent = sorted({c for c in text if not c.isspace() and not any(ord(c) in m for m in cmaps)})
        if absent:
            lacking[message] = "".join(absent)
    return lacking


def _cmap(path: str | Path) -> set[int]:
    return set(TTFont(str(path), fontNumber=0).getBestCmap())


def test_every_character_of_the_diagram_labels_is_in_the_fonts():
    cmaps = [_cmap(fonts.FONT_FILE),
             _cmap(font_manager.findfont("DejaVu Sans", fallback_to_default=False))]
    lacking = missing_characters(diagram_translations(), cmaps)
    assert not lacking, (f"the font lacks {''.join(sorted(set(''.join(lacking.values()))))!r} "
                         f"(in {sorted(lacking)}): regenerate it with {REGENERATE}")


def test_a_label_with_a_character_the_font_lacks_is_named():
    cmaps = [_cmap(fonts.FONT_FILE)]
    assert missing_characters({"model": "模型"}, cmaps) == {}
    assert missing_characters({"model": "模型\u9f98"}, cmaps) == {"model": "\u9f98"}


def test_the_shipped_font_is_a_small_licensed_subset():
    size = fonts.FONT_FILE.stat().st_size
    assert size < 1_200_000, f"{size:,} bytes"
    font = TTFont(str(fonts.FONT_FILE))
    assert font["name"].getDebugName(1) == FAMILY == fonts.FAMILY
    assert "Open Font License" in font["name"].getDebugName(13)
    cmap = set(font.getBestCmap())
    assert all(ord(c) in cmap for c in gb2312_level1()), "GB2312 level 1 is not all there"
    licence = fonts.FONT_FILE.with_name("OFL.txt").read_text(encoding="utf-8")
    assert "SIL OPEN FONT LICENSE Version 1.1" in licence and "Noto Sans CJK SC" in licence


def test_register_adds_the_font_from_the_package_only_once():
    assert fonts.register() == FAMILY
    count = sum(e.name == FAMILY for e in font_manager.fontManager.ttflist)
    fonts.register()
    assert sum(e.name == FAMILY for e in font_manager.fontManager.ttflist) == count
    path = font_manager.findfont(font_manager.FontProperties(family=FAMILY, weight="bold"),
                                 fallback_to_default=False)
    assert Path(path) == fonts.FONT_FILE


def test_font_subset_cuts_and_renames_a_font(tmp_path):
    """tools/font_subset.py on the shipped font itself (the full font is not in the repository)."""
    out = tmp_path / "cut.otf"
    subset(fonts.FONT_FILE, out, "模型ab")
    font = TTFont(str(out))
    assert {chr(c) for c in font.getBestCmap()} == set("模型ab")
    assert font["name"].getDebugName(1) == FAMILY
    with pytest.raises(SystemExit, match="lacks"):
        subset(fonts.FONT_FILE, tmp_path / "bad.otf", "\u9f98")


def test_font_subset_cli_names_a_missing_font(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tools.font_subset", str(tmp_path / "no.ttc")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "no font file" in done.stderr and "fonts-noto-cjk" in done.stderr


def test_bad_input_is_explained_in_chinese(monkeypatch):
    monkeypatch.setenv("COURSE_LANG", "zh")
    expected = _("state_dict_tree got no keys; pass model.state_dict() or a list of its keys")
    with pytest.raises(ValueError) as raised:
        state_dict_tree([])
    assert str(raised.value) == expected
    with pytest.raises(TypeError, match="'fc.weight'"):
        state_dict_tree([3])
    with pytest.raises(ValueError, match="helpers.checkpoint.save_checkpoint"):
        checkpoint_anatomy({"format": 1})


def test_no_committed_notebook_output_reports_a_missing_glyph():
    """Both editions' stored outputs: a missing glyph would show as a warning under a figure."""
    import json

    found = []
    for path in sorted((ROOT / "notebooks").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for output in cell.get("outputs", []):
                text = "".join(output.get("text", []))
                if ("Glyph" in text and "missing from" in text) or "findfont:" in text:
                    found.append(f"{path.relative_to(ROOT)} cell {cell.get('id')}")
    assert not found, found
