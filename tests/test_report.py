"""helpers.report: measured numbers carry the mark that notebooks/sanitize.cfg masks."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from helpers.report import MARK, measured, percent

CFG = Path(__file__).resolve().parents[1] / "notebooks" / "sanitize.cfg"


def sanitize(text: str) -> str:
    # the same parser nbval uses for its sanitize file
    pairs = re.findall("^regex: (.*)$\n^replace: (.*)$", CFG.read_text(encoding="ascii"), flags=re.M)
    for regex, replace in pairs:
        text = re.sub(regex, replace, text)
    return text


def test_format():
    assert measured(0.98765) == "≈0.99"
    assert measured(0.5, 3) == "≈0.500"
    assert measured([0.24, 0.7449]) == "≈[0.24, 0.74]"
    assert percent(0.9731) == "≈97%"
    assert measured(float("nan")) == "≈nan"


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6), st.integers(0, 6))
def test_any_two_measurements_sanitize_alike(a, b, ndigits):
    line_a = f"validation accuracy {measured(a, ndigits)}, history {measured([a, b], ndigits)}"
    line_b = f"validation accuracy {measured(b, ndigits)}, history {measured([b, a, b], ndigits)}"
    assert sanitize(line_a) == sanitize(line_b)


def test_unmarked_numbers_stay_compared():
    assert sanitize("torch.Size([8, 10]) 1,290 parameters lr 0.00293") == \
        "torch.Size([8, 10]) 1,290 parameters lr 0.00293"
    assert sanitize(f"acc {MARK}0.98") != sanitize("acc 0.98")


def test_a_command_line_tool_prints_the_mark_on_a_cp1252_pipe():
    """A Windows pipe encodes stdout as cp1252, which has no ≈: the tools print ? instead of dying."""
    import subprocess
    import sys

    code = ("from helpers.report import measured, tolerate_narrow_console\n"
            "tolerate_narrow_console()\nprint('accuracy', measured(0.97))")
    env = {**__import__("os").environ, "PYTHONIOENCODING": "cp1252"}
    env.pop("PYTHONUTF8", None)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert result.stdout.decode("cp1252").strip() == "accuracy ?0.97"
