"""Run learners' answers through the notebook-facing checkers, as a notebook would.

Each answer is the code a learner types into an exercise cell. It runs in an IPython shell whose
namespace holds what the chapter defined before its exercises; then the chapter's checker cell
runs, and the line it prints is the verdict. The shell keeps an input history (``In``), so
checkers that re-run the learner's cell see it as in Jupyter.

>>> line = Notebook().run({"x": 1}, "y = x + 1", "print('[OK] y is', y)")
>>> line
'[OK] y is 2'
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import textwrap
from dataclasses import dataclass
from typing import Any

from torch import nn

VERDICTS = ("[OK]", "[TRY AGAIN]", "[TODO]")


@dataclass(frozen=True)
class Answer:
    """One exercise answer and the verdict it must get (``words``: what the message must say)."""

    exercise: int
    verdict: str  # "OK", "TRY AGAIN" or "TODO"
    label: str
    code: str
    words: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"ex{self.exercise}-{self.verdict.replace(' ', '_').lower()}-{self.label}"


def _clean(code: str) -> str:
    return textwrap.dedent(code).strip()


def wrong(exercise: int, label: str, code: str, *words: str) -> Answer:
    return Answer(exercise, "TRY AGAIN", label, _clean(code), words)


def right(exercise: int, label: str, code: str, *words: str) -> Answer:
    return Answer(exercise, "OK", label, _clean(code), words)


def todo(exercise: int, label: str, code: str) -> Answer:
    return Answer(exercise, "TODO", label, _clean(code))


def mutation(solutions: dict[int, str], exercise: int, label: str, old: str, new: str,
             *words: str) -> Answer:
    """The reference solution with one small change (``old`` -> ``new``): it must be caught."""
    source = inspect.cleandoc(solutions[exercise])
    assert old in source, f"mutation {label!r}: {old!r} is not in solution {exercise}"
    return Answer(exercise, "TRY AGAIN", f"mutation-{label}", source.replace(old, new, 1), words)


def fresh(namespace: dict[str, Any]) -> dict[str, Any]:
    """A copy of the chapter namespace whose models a wrong answer may change freely."""
    return {k: copy.deepcopy(v) if isinstance(v, nn.Module) else v for k, v in namespace.items()}


class Notebook:
    """An IPython shell that runs an exercise cell, then its checker cell."""

    def __init__(self) -> None:
        from IPython.core.interactiveshell import InteractiveShell

        self.shell = InteractiveShell.instance()

    def run(self, namespace: dict[str, Any], answer: str, check: str) -> str:
        """The verdict line the checker cell prints after ``answer`` ran."""
        shell = self.shell
        for name in [k for k in shell.user_ns if k not in shell.user_ns_hidden]:
            del shell.user_ns[name]  # what reset() does, without its slow gc.collect()
        history = shell.history_manager
        del history.input_hist_parsed[1:], history.input_hist_raw[1:]
        shell.user_ns.update(fresh(namespace))
        with contextlib.redirect_stdout(io.StringIO()):
            result = shell.run_cell(answer, store_history=True)
        if not result.success:
            raise AssertionError(f"the answer cell itself failed: "
                                 f"{result.error_before_exec or result.error_in_exec!r}")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = shell.run_cell(check, store_history=True)
        assert result.success, f"the checker cell raised {result.error_in_exec!r}"
        lines = [line for line in out.getvalue().splitlines() if line.startswith(VERDICTS)]
        assert len(lines) == 1, f"the checker printed {out.getvalue()!r}"
        return lines[0]
