"""Checkers for the chapter exercises: one module per chapter (``ch1`` .. ``ch4``).

A checker prints a short "[OK] ..." when the answer is right. When it is wrong it raises
``ExerciseError`` whose message says, in plain words, what is wrong and what to try:

>>> from helpers.exercises.ch1 import check_registered_blocks
>>> check_registered_blocks(MyNet())
[OK] 3 blocks, 2,340 trainable parameters, all registered
"""

from __future__ import annotations


class ExerciseError(AssertionError):
    """A wrong exercise answer; the message explains what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


def require(condition: object, message: str) -> None:
    """Raise ``ExerciseError(message)`` unless ``condition`` holds.

    >>> require(2 + 2 == 4, "arithmetic is broken")
    """
    if not condition:
        raise ExerciseError(message)


def passed(message: str) -> bool:
    """Print the success line and return True (so tests can assert on it)."""
    print(f"[OK] {message}")
    return True
