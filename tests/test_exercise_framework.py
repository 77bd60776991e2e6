"""helpers.exercises: checkers print [TODO] / [TRY AGAIN] / [OK], never raise, echo nothing."""

from __future__ import annotations

import pytest
from torch import nn

from helpers.exercises import (
    ExerciseError,
    Unanswered,
    checker,
    is_scaffold,
    passed,
    require,
    solution_lookup,
)


@checker("Write double(x).")
def check_double(fn) -> bool:
    if fn(0) is None:
        raise Unanswered("double returns None: finish its body.")
    require(fn(2) == 4, f"double(2) returned {fn(2)!r}; it should return 4")
    return passed("double works")


def test_scaffolds_are_recognised():
    def stub(x): ...

    def documented(x):
        """Return twice x."""

    class StubNet(nn.Module):
        def __init__(self, n): ...

        def forward(self, x): ...

    assert is_scaffold(None) and is_scaffold(...) and is_scaffold(stub) and is_scaffold(documented)
    assert is_scaffold(StubNet) and is_scaffold(StubNet(3))
    assert not is_scaffold(lambda x: 2 * x) and not is_scaffold(nn.Linear(2, 2))
    assert not is_scaffold(nn.Linear) and not is_scaffold(0) and not is_scaffold("")


@pytest.mark.parametrize("answer, expected", [
    (None, "[TODO] Write double(x).\n"),
    (lambda x: {}.get(x), "[TODO] double returns None: finish its body.\n"),
    (lambda x: x + 1, "[TRY AGAIN] double(2) returned 3; it should return 4\n"),
    (lambda x: x / 0, "[TRY AGAIN] your code raised ZeroDivisionError: division by zero\n"),
    (lambda x: 2 * x, "[OK] double works\n"),
])
def test_notebook_checker_prints_one_line_and_returns_none(answer, expected, capsys):
    assert check_double(answer) is None
    assert capsys.readouterr().out == expected


def test_strict_checker_raises_for_tests():
    with pytest.raises(ExerciseError, match="should return 4"):
        check_double.__wrapped__(lambda x: x)
    assert check_double.__wrapped__(lambda x: 2 * x) is True


def test_wrong_call_is_explained(capsys):
    check_double(1, 2, 3)
    assert capsys.readouterr().out.startswith("[TRY AGAIN] the checker was called with other")


def test_solution_lookup():
    solution = solution_lookup(9, {1: """
        x = 1
        y = 2
    """})
    assert solution(1) == "x = 1\ny = 2"
    with pytest.raises(ValueError, match="chapter 9 has exercises \\[1\\]; there is no exercise 2"):
        solution(2)
