"""Checkers for chapter 3, saving and loading (``notebooks/03_saving_and_loading.ipynb``).

>>> check_prefix_stripper(None)
[TODO] Write strip_module_prefix(state_dict): return a new dict in which only keys that ...
>>> check_prefix_stripper(strip_module_prefix)
[OK] 5 cases, 16 keys: 'module.' removed where it starts a key, every other key left alone

Exercises 1-2 live in ``files.py``, 3-4 in ``resuming.py``. Each checker prints one line,
``[TODO]``, ``[TRY AGAIN]`` or ``[OK]``, and never raises; the strict version (raises
``ExerciseError``, returns True) is ``check_x.__wrapped__``. ``solution(n)`` shows the answer to
exercise ``n``.
"""

from __future__ import annotations

from helpers.exercises import solution_lookup
from helpers.exercises.ch3.files import (
    TODO_SAVE,
    TODO_STRIP,
    check_prefix_stripper,
    check_save_for_inference,
)
from helpers.exercises.ch3.resuming import (
    TODO_INFERENCE,
    TODO_RESUME,
    check_ready_for_inference,
    check_resume,
)
from helpers.exercises.solutions import CH3 as SOLUTIONS

solution = solution_lookup(3, SOLUTIONS)

__all__ = ["SOLUTIONS", "TODO_INFERENCE", "TODO_RESUME", "TODO_SAVE", "TODO_STRIP",
           "check_prefix_stripper", "check_ready_for_inference", "check_resume",
           "check_save_for_inference", "solution"]
