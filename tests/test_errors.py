"""helpers.errors.expect_error: prints the real message short, and fails when the lesson is wrong."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers.errors import ExpectedErrorMissing, expect_error, short_error


def test_prints_type_and_real_message(capsys):
    with expect_error(ValueError, match="empty parameter list") as caught:
        torch.optim.SGD([], lr=0.1)
    out = capsys.readouterr().out
    assert out.startswith("[expected error] ValueError: optimizer got an empty parameter list")
    assert isinstance(caught.exception, ValueError)
    assert "Traceback" not in out and "File " not in out


def test_real_load_state_dict_mismatch_is_short(capsys):
    model = torch.nn.Linear(4, 3)
    with expect_error(RuntimeError, match="size mismatch for weight"):
        model.load_state_dict(torch.nn.Linear(4, 5).state_dict())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[expected error] RuntimeError: Error(s) in loading state_dict for Linear:"
    assert any("size mismatch for weight" in line for line in lines)


def test_no_error_fails_loudly():
    with pytest.raises(ExpectedErrorMissing, match="ran without an error"):
        with expect_error(KeyError):
            {"a": 1}["a"]


def test_other_message_fails_loudly():
    with pytest.raises(ExpectedErrorMissing, match="update the match"):
        with expect_error(KeyError, match="fc.weight"):
            {}["fc.bias"]


def test_other_type_passes_through():
    with pytest.raises(TypeError):
        with expect_error(KeyError):
            len(3)


def test_tuple_of_types(capsys):
    with expect_error((KeyError, IndexError)):
        [][1]
    assert "IndexError" in capsys.readouterr().out


def test_colours_and_local_paths_are_removed():
    exc = RuntimeError(f"\x1b[1mbold\x1b[0m at {os.getcwd()}/runs/x.pt and "
                       "/home/me/.venv/lib/python3.11/site-packages/torch/serialization.py")
    text = short_error(exc)
    assert text == "RuntimeError: bold at runs/x.pt and site-packages/torch/serialization.py"


def test_long_messages_are_cut():
    exc = RuntimeError("\n".join(f"line {i} " + "x" * 500 for i in range(20)))
    lines = short_error(exc, lines=3, width=80).splitlines()
    assert len(lines) == 4 and lines[-1] == "… (17 more lines)"
    assert all(len(line) <= 80 + len("RuntimeError: ") for line in lines)


@given(st.text(max_size=2000), st.integers(1, 10), st.integers(10, 300))
def test_short_error_is_bounded(message, lines, width):
    text = short_error(ValueError(message), lines=lines, width=width)
    assert text.startswith("ValueError")
    assert len(text.splitlines()) <= lines + 1


def test_an_indented_block_message_is_dedented():
    exc = RuntimeError("\n            Some tensors share memory.\n            Use `save_model`.\n     ")
    assert short_error(exc) == "RuntimeError: Some tensors share memory.\nUse `save_model`."
