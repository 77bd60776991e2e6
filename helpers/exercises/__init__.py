"""Checkers and solutions for the chapter exercises: ``ch1`` .. ``ch4`` (a module or a package each).

``common`` holds the checking code they share (run a model, real digits, hooks, state_dicts),
``notebook`` reads the learner's cell history (to re-run a cell on another input), and
``solutions`` the answers, re-exported by each chapter as ``SOLUTIONS`` and ``solution(n)``.

A checker never raises, so *Run all* goes on, and returns nothing for Jupyter to echo. It prints
one line:

- ``[TODO] ...`` while the exercise cell still holds its scaffold (``None``, ``...`` or a function
  or class whose body is only ``...``): what to write;
- ``[TRY AGAIN] ...`` for a wrong answer: what is wrong and what to change;
- ``[OK] ...`` for a right one.

>>> from helpers.exercises.ch1 import check_named_sequential, solution
>>> check_named_sequential(None, num_classes=10, batch=X)
[TODO] Build named_net: an nn.Sequential from an OrderedDict with the layers conv, relu, ...
>>> solution(1)  # the answer, when you are stuck

Each checker keeps the strict version as ``checker.__wrapped__``: it raises ``ExerciseError`` for a
wrong answer and returns ``True`` for a right one (the unit tests use it).
"""

from __future__ import annotations

import dis
import functools
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from helpers.errors import short_error
from helpers.i18n import _

F = TypeVar("F", bound=Callable[..., Any])


class ExerciseError(AssertionError):
    """A wrong exercise answer; the message explains what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class Unanswered(Exception):
    """The exercise still holds its scaffold; the message says what to write."""


def require(condition: object, message: str) -> None:
    """Raise ``ExerciseError(message)`` unless ``condition`` holds.

    >>> require(2 + 2 == 4, "arithmetic is broken")
    """
    if not condition:
        raise ExerciseError(message)


def passed(message: str) -> bool:
    """Print the success line and return True (the strict checkers return it)."""
    print(f"[OK] {message}")
    return True


def _is_stub_function(obj: Any) -> bool:
    """A function whose body is only ``...``, ``pass`` and/or a docstring: it returns None at once."""
    code = getattr(obj, "__code__", None)
    if code is None:
        return False
    ops = [(i.opname, i.argval) for i in dis.get_instructions(code)
           if i.opname not in ("RESUME", "NOP", "CACHE")]
    return ops in ([("LOAD_CONST", None), ("RETURN_VALUE", None)], [("RETURN_CONST", None)])


def is_scaffold(value: Any) -> bool:
    """True for what an untouched exercise cell leaves behind.

    ``None``, ``...``, a function whose body is only ``...`` (or ``pass``, or a docstring), a class
    whose own methods are all such stubs, and an instance of such a class.

    >>> def resume(path): ...
    >>> is_scaffold(resume), is_scaffold(len)
    (True, False)
    """
    if value is None or value is Ellipsis:
        return True
    if inspect.isfunction(value) or inspect.ismethod(value):
        return _is_stub_function(value)
    cls = value if inspect.isclass(value) else type(value)
    methods = [v for k, v in vars(cls).items() if inspect.isfunction(v)]
    return bool(methods) and all(_is_stub_function(m) for m in methods)


def checker(todo: str, *, answers: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Turn a strict checker (raises ``ExerciseError``, returns True) into a notebook checker.

    ``todo`` is printed while the answer is still a scaffold. ``answers`` names the parameters
    that hold the learner's work (default: the first one). The strict checker may itself raise
    ``Unanswered`` when it finds a scaffold deeper inside an answer.
    """

    def decorate(strict: F) -> F:
        signature = inspect.signature(strict)
        names = answers or (next(iter(signature.parameters)),)

        @functools.wraps(strict)
        def notebook_checker(*args: Any, **kwargs: Any) -> None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                print("[TRY AGAIN] " + _("the checker was called with other arguments than it takes "
                                         "({error}); call it as in the cell of the course: "
                                         "{call}").format(error=exc, call=f"{strict.__name__}{signature}"))
                return None
            if any(is_scaffold(bound.arguments.get(name)) for name in names):
                print(f"[TODO] {_(todo)}")
                return None
            try:
                strict(*args, **kwargs)
            except Unanswered as exc:
                print(f"[TODO] {_(str(exc) or todo)}")
            except ExerciseError as exc:
                print(f"[TRY AGAIN] {exc}")
            except Exception as exc:  # the learner's code may fail in any way: explain, go on
                print("[TRY AGAIN] " + _("your code raised {error}").format(error=short_error(exc)))
            sys.stdout.flush()
            return None

        notebook_checker.todo = todo  # type: ignore[attr-defined]
        return notebook_checker  # type: ignore[return-value]

    return decorate


class Solution(str):
    """Source code of an exercise's solution; a notebook shows it as a highlighted code block."""

    def _repr_markdown_(self) -> str:
        return f"```python\n{self}\n```"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))


def solution_lookup(chapter: int, solutions: Mapping[int, str]) -> Callable[[int], Solution]:
    """Build a chapter module's ``solution(n)`` from its ``SOLUTIONS`` table."""

    def solution(n: int) -> Solution:
        """The source code of exercise ``n``'s solution (paste it into the exercise cell)."""
        if n not in solutions:
            raise ValueError(_("chapter {chapter} has exercises {exercises}; there is no exercise "
                               "{number}").format(chapter=chapter, exercises=sorted(solutions),
                                                  number=repr(n)))
        return Solution(inspect.cleandoc(solutions[n]))

    solution.__qualname__ = solution.__name__ = "solution"
    return solution
