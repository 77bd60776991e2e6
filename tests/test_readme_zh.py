"""README.zh-CN.md, the learner part of README.md in Chinese, stays in step with the English one:
it is linked from README.md, names notebooks that exist, and its commands are README.md's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
README_ZH = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")


def _commands(text: str) -> list[str]:
    """Lines of the fenced code blocks, without trailing comments (those may be translated)."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", text, re.M | re.S)
    lines = [re.sub(r"\s+#.*$", "", line).rstrip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_readme_links_the_chinese_readme_and_back():
    assert "(README.zh-CN.md)" in README
    assert "(README.md)" in README_ZH


def test_the_chinese_readme_names_the_chinese_notebooks_that_exist():
    named = set(re.findall(r"notebooks/zh/(\d\d_\w+\.ipynb)", README_ZH))
    english = {p.name for p in (ROOT / "notebooks").glob("0*.ipynb")}
    assert named == english, named ^ english
    assert all((ROOT / "notebooks" / "zh" / name).is_file() for name in named)


def test_the_chinese_readme_runs_the_english_readmes_commands():
    commands = _commands(README_ZH)
    assert len(commands) >= 4, commands
    english = set(_commands(README))
    assert [c for c in commands if c not in english] == []


def test_the_chinese_readme_keeps_the_bug_table_and_the_variables():
    for text in ("`Bottleneck`", "`{k[7:]: v ...}`", "`weights_only`", "`COURSE_NUM_CLASSES`",
                 "`COURSE_DEVICE`", "`COURSE_LANG`", "[TODO]", "[TRY AGAIN]", "[OK]"):
        assert text in README_ZH, text
