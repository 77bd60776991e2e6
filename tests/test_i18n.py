"""helpers.i18n: the helpers speak English by default and Chinese for COURSE_LANG=zh, from a
catalog that covers every message, keeps every placeholder and ships compiled in the package."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_file
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from helpers import i18n
from helpers.i18n import _, ngettext, set_language

ROOT = Path(__file__).resolve().parents[1]
PO = ROOT / "helpers" / "locale" / "zh" / "LC_MESSAGES" / "helpers.po"
MO = PO.with_suffix(".mo")
#: What `pybabel extract -k N_` looks for (helpers/i18n.py): the default keywords and N_.
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
PERCENT = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(?:\*|\d+)?(?:\.\d+)?[diouxXeEfFgGcrsa%]")


@pytest.fixture(autouse=True)
def _follow_the_environment(monkeypatch):
    monkeypatch.delenv("COURSE_LANG", raising=False)
    set_language(None)
    yield
    set_language(None)


# The checks, as functions of a catalog, so that each is shown to fail on a bad one -----------

def source_messages() -> dict[str, tuple[str, int]]:
    """Every message the helpers pass to _() / ngettext() / N_(), with where it is (Babel's
    extractor, the one `pybabel extract` runs over babel.cfg's helpers/**.py)."""
    found: dict[str, tuple[str, int]] = {}
    for path in sorted((ROOT / "helpers").rglob("*.py")):
        for lineno, message, _comments, _context in extract_from_file("python", str(path),
                                                                      keywords=KEYWORDS):
            key = message[0] if isinstance(message, tuple) else message
            found.setdefault(key, (path.relative_to(ROOT).as_posix(), lineno))
    return found


def untranslated(catalog: Catalog, messages: dict[str, tuple[str, int]]) -> list[str]:
    """The source messages with no Chinese entry (absent, empty or fuzzy)."""
    missing = []
    for key, (where, line) in messages.items():
        entry = catalog.get(key)
        strings = entry.string if entry is not None and isinstance(entry.string, tuple) else (
            (entry.string,) if entry is not None else ())
        if entry is None or entry.fuzzy or not all(strings):
            missing.append(f"{where}:{line}: {key!r}")
    return missing


def placeholders(text: str) -> list[str]:
    """The ``{name!r:spec}`` and ``%s`` placeholders of a message, sorted."""
    fields = []
    try:
        for _literal, name, spec, conversion in string.Formatter().parse(text):
            if name is not None:
                fields.append("{" + name + ("!" + conversion if conversion else "") +
                              (":" + spec if spec else "") + "}")
    except ValueError as exc:  # an unbalanced brace
        fields.append(f"<{exc}>")
    fields += [m for m in PERCENT.findall(text) if m != "%%"]
    return sorted(fields)


def placeholder_mismatches(catalog: Catalog) -> list[str]:
    """Entries whose translation has other placeholders than the English (for a plural entry:
    than the English plural, which every Chinese form must keep)."""
    bad = []
    for entry in catalog:
        if not entry.id or not entry.string:
            continue
        english = entry.id[-1] if isinstance(entry.id, tuple) else entry.id
        forms = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        for form in forms:
            if form and placeholders(form) != placeholders(english):
                bad.append(f"{english!r}: {placeholders(english)} vs {placeholders(form)} in {form!r}")
    return bad


def _catalog(*entries: tuple[str | tuple[str, str], str | tuple[str, ...]]) -> Catalog:
    catalog = Catalog(locale="zh")
    for msgid, msgstr in entries:
        catalog.add(msgid, msgstr)
    return catalog


def _real_catalog() -> Catalog:
    with open(PO, "rb") as file:
        return read_po(file)


# The checks themselves fail on bad catalogs ---------------------------------------------------

def test_a_message_without_a_chinese_entry_is_named():
    messages = {"the kernel died": ("helpers/grade.py", 1), "missing": ("helpers/grade.py", 2),
                "error": ("helpers/grade.py", 3)}
    catalog = _catalog(("the kernel died", "内核崩溃了"), ("missing", ""))
    catalog.add("error", "出错", flags=["fuzzy"])
    assert untranslated(catalog, messages) == ["helpers/grade.py:2: 'missing'",
                                               "helpers/grade.py:3: 'error'"]


def test_a_translation_with_other_placeholders_is_named():
    good = _catalog(("{file} failed: %s", "{file} 失败：%s"),
                    (("{count} cell", "{count} cells"), ("{count} 个单元",)))
    assert placeholder_mismatches(good) == []
    for msgid, msgstr in [("{file} failed", "{文件} 失败"), ("{file} failed", "失败"),
                          ("{x:g} s", "{x} 秒"), ("%s failed", "失败"), ("{a} {b}", "{a} {a}"),
                          (("{count} cell", "{count} cells"), ("单元",))]:
        assert placeholder_mismatches(_catalog((msgid, msgstr))), (msgid, msgstr)


# The real catalog ------------------------------------------------------------------------------

def test_every_message_of_the_helpers_has_a_chinese_entry():
    messages = source_messages()
    assert len(messages) >= 600  # every learner-facing module of the helpers is wrapped (issue 23)
    assert untranslated(_real_catalog(), messages) == []


def test_every_chinese_entry_keeps_the_english_placeholders():
    assert placeholder_mismatches(_real_catalog()) == []


def test_the_catalog_holds_no_message_the_helpers_no_longer_say():
    used = set(source_messages())
    unused = [entry.id for entry in _real_catalog() if entry.id
              and (entry.id[0] if isinstance(entry.id, tuple) else entry.id) not in used]
    assert unused == [], "run pybabel extract + update (helpers/i18n.py) to drop them"


def test_the_compiled_catalog_is_up_to_date_with_the_po_file():
    def messages(catalog: Catalog) -> dict:
        def key(value):  # read_mo gives a plural's forms as a list, read_po as a tuple
            return tuple(value) if isinstance(value, (list, tuple)) else value

        # an untranslated entry (empty msgstr) is not compiled; the test above names it
        return {key(entry.id): key(entry.string) for entry in catalog
                if entry.id and not entry.fuzzy and all(
                    entry.string if isinstance(entry.string, (list, tuple)) else (entry.string,))}

    with open(MO, "rb") as file:
        compiled = read_mo(file)
    assert messages(compiled) == messages(_real_catalog()), (
        "helpers.mo differs from helpers.po: pybabel compile -d helpers/locale -D helpers")


def test_chinese_prose_uses_full_width_punctuation():
    """Inside Chinese text a comma, colon or parenthesis is full width (code stays as it is)."""
    half = re.compile(r"[\u4e00-\u9fff][,;:()]|[,;(][\u4e00-\u9fff]|[\u4e00-\u9fff] ?\)")
    for entry in _real_catalog():
        for form in (entry.string if isinstance(entry.string, tuple) else (entry.string,)):
            assert not half.search(form or ""), form


# The helpers speak the language asked for --------------------------------------------------------

def test_english_by_default_and_chinese_for_course_lang_zh(monkeypatch):
    assert _("the kernel died") == "the kernel died"
    monkeypatch.setenv("COURSE_LANG", "zh")  # read at call time: no re-import needed
    assert _("the kernel died") == "内核崩溃了"
    assert ngettext("ran; {count} cell raised (first: cell {cell}, {error})",
                    "ran; {count} cells raised (first: cell {cell}, {error})", 3).startswith("已运行")
    monkeypatch.setenv("COURSE_LANG", "zh_CN.UTF-8")
    assert i18n.language() == "zh"
    monkeypatch.setenv("COURSE_LANG", "en")
    assert _("the kernel died") == "the kernel died"


def test_set_language_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("COURSE_LANG", "en")
    set_language("zh")
    assert _("missing") == "缺失"
    set_language(None)
    assert _("missing") == "missing"
    with pytest.raises(ValueError, match="unknown language 'fr': the course speaks en and zh"):
        set_language("fr")


def test_an_unknown_course_lang_warns_and_speaks_english(monkeypatch):
    monkeypatch.setenv("COURSE_LANG", "klingon")
    with pytest.warns(UserWarning, match="COURSE_LANG='klingon' is not a language of the course"):
        assert i18n.language() == "en"


def test_expect_error_framing_in_chinese_keeps_the_tag(monkeypatch, capsys):
    from helpers.errors import ExpectedErrorMissing, expect_error, short_error

    monkeypatch.setenv("COURSE_LANG", "zh")
    with expect_error(KeyError):
        {}["fc.weight"]
    assert capsys.readouterr().out == "[expected error] KeyError: 'fc.weight'\n"
    with pytest.raises(ExpectedErrorMissing, match="预期抛出 KeyError 或 IndexError，但代码运行时没有报错"):
        with expect_error((KeyError, IndexError)):
            pass
    assert short_error(ValueError("a\nb\nc"), lines=1).endswith("…（另有 2 行）")


def test_checker_messages_in_chinese(monkeypatch):
    import torch

    from helpers.exercises import ExerciseError
    from helpers.exercises.common import require_logits, run_eval

    monkeypatch.setenv("COURSE_LANG", "zh")
    with pytest.raises(ExerciseError, match=r"对一批 8 张图像，your net 返回了 4 行；请保留批次维"):
        require_logits(torch.zeros(4, 10), 8, 10, "your net")
    with pytest.raises(ExerciseError, match=r"某个 Linear 层每行收到 3 个特征，但它期望 2 个"):
        run_eval(torch.nn.Linear(2, 2), torch.zeros(5, 3), what="the head")


def test_grade_table_in_chinese_is_aligned(monkeypatch):
    from helpers.grade import Result, Row, _width, table

    monkeypatch.setenv("COURSE_LANG", "zh")
    rows = [Row("ada", "ada.ipynb", _("ran"), 1.0, {"ch2.1": Result("OK"), "ch2.2": Result("error")})]
    lines = table(rows).splitlines()
    assert lines[0].split() == ["学习者", "ch2.1", "ch2.2", "ch2.3", "ch2.4", "笔记本"]
    assert lines[1].split() == ["ada", "OK", "出错", "缺失", "缺失", "已运行"]
    # a wide character takes two terminal columns: the columns line up on screen
    for head, cell in [("ch2.1", "OK"), ("ch2.2", "出错"), ("ch2.4", "缺失"), ("笔记本", "已运行")]:
        assert _width(lines[0][:lines[0].index(head)]) == _width(lines[1][:lines[1].rindex(cell)])


# A sample of what a learner reads, under COURSE_LANG=zh: Chinese text, the tags unchanged -------

CJK = re.compile(r"[\u4e00-\u9fff]")


def _chinese_line(line: str, tag: str) -> None:
    assert line.startswith(f"[{tag}] "), line  # the tag stays English so that tools can read it
    assert len(CJK.findall(line)) >= 4, line


def test_a_sample_of_the_helpers_speaks_chinese(monkeypatch, capsys, tmp_path):
    import torch
    from torch import nn

    from helpers.checkpoint import CheckpointError, load_weights, save_checkpoint
    from helpers.envcheck import Check, device_lines
    from helpers.exercises import ch1, ch2, ch3, ch4
    from helpers.settings import SettingsError, course_settings, parse_num_classes

    monkeypatch.setenv("COURSE_LANG", "zh")
    # one checker verdict per chapter: a TODO, a TRY AGAIN, an OK, a TRY AGAIN
    ch1.check_named_sequential(None, num_classes=10, batch=torch.zeros(8, 1, 8, 8))
    _chinese_line(capsys.readouterr().out, "TODO")
    model = nn.Sequential()
    model.fc = nn.ReLU()
    ch2.check_new_head(model, num_classes=5)
    _chinese_line(capsys.readouterr().out, "TRY AGAIN")
    ch3.check_prefix_stripper(lambda sd: {k.removeprefix("module."): v for k, v in sd.items()})
    out = capsys.readouterr().out
    _chinese_line(out, "OK")
    assert "'module.'" in out  # code stays code
    ch4.check_torchrun_command("python train.py", processes=4, num_classes=10, epochs=5,
                               checkpoint_dir="runs/ch4/ex4")
    _chinese_line(capsys.readouterr().out, "TRY AGAIN")
    # the settings widgets and their errors
    widgets = course_settings(show=False)
    assert (widgets.num_classes_widget.description, widgets.device_widget.description) == ("类别数", "设备")
    with pytest.raises(SettingsError, match="必须是 2 到 10 之间的整数"):
        parse_num_classes("11")
    # a line of the environment check, and the devices line
    assert str(Check("torch", False, _("missing; install with: pip install '{req}'").format(
        req="torch>=2.6"))) == "[FAIL] torch          缺失；安装命令：pip install 'torch>=2.6'"
    assert device_lines()[-1].startswith("cpu: ") and "个 torch 线程" in device_lines()[-1]
    # a checkpoint error: reason and advice, the path as given
    with pytest.raises(CheckpointError) as caught:
        load_weights(nn.Linear(2, 2), tmp_path / "missing.pt")
    assert str(caught.value).startswith(f"{tmp_path / 'missing.pt'}: 没有这个检查点文件")
    assert "请检查文件名和文件夹，或者先训练并保存。" in str(caught.value)
    save_checkpoint(tmp_path / "c.pt", model=nn.Linear(2, 2), epoch=2)
    with pytest.raises(CheckpointError, match="有 1 个张量的形状与模型中的不同"):
        load_weights(nn.Linear(3, 2), tmp_path / "c.pt")


def test_the_same_sample_stays_english_by_default(capsys):
    import torch

    from helpers.exercises import ch1
    from helpers.settings import course_settings

    ch1.check_named_sequential(None, num_classes=10, batch=torch.zeros(8, 1, 8, 8))
    assert capsys.readouterr().out.startswith("[TODO] Build named_net: an nn.Sequential")
    widgets = course_settings(show=False)
    assert widgets.num_classes_widget.description == "Number of classes"


def test_data_launch_and_export_errors_in_both_languages(monkeypatch, tmp_path):
    from torch import nn

    from helpers.data import load_digits, make_loader
    from helpers.export import ExportError, export_pt2, format_of
    from helpers.launch import torchrun_command

    def messages() -> list[str]:
        found = []
        for call in (lambda: load_digits(channels=2), lambda: make_loader([], batch_size=0),
                     lambda: torchrun_command("m", "--epochs 3"),
                     lambda: format_of(tmp_path / "model.txt"),
                     lambda: export_pt2(nn.Linear(2, 2), tmp_path, class_names=["a"])):
            with pytest.raises((ValueError, TypeError, ExportError)) as caught:
                call()
            found.append(str(caught.value))
        return found

    english = messages()
    assert english == [
        "channels must be 1 or 3, got 2",
        "batch_size must be a positive integer, got 0",
        "args must be a list of strings, e.g. ['--epochs', '3'], not one string",
        "model.txt: unknown export format '.txt'; name the file *.onnx or *.pt2",
        "the model is in training mode: dropout and batch-norm statistics would be exported as in "
        "training; call model.eval() first"]
    monkeypatch.setenv("COURSE_LANG", "zh")
    chinese = messages()
    for line in chinese:
        assert len(CJK.findall(line)) >= 4, line
    assert chinese[2] == "args 必须是字符串列表，例如 ['--epochs', '3']，而不是一个字符串"
    assert chinese[3].startswith("model.txt：") and "*.onnx" in chinese[3]  # identifiers unchanged
    assert "model.eval()" in chinese[4]
