"""Checkers for chapter 4, the full pipeline (``notebooks/04_full_pipeline.ipynb``).

>>> check_extended_model(None, old_model, num_classes=settings.num_classes, example=X)
[TODO] Build extended: a TinyResNet for settings.num_classes with old_model's backbone ...
>>> check_extended_model(extended, old_model, num_classes=settings.num_classes, example=X)
[OK] head 5 -> 10 outputs; 24 backbone weights equal the trained model's; scores of the 5 ...

Exercises 1-3 live in ``training.py``, 4-5 in ``deployment.py``. Each checker prints one line,
``[TODO]``, ``[TRY AGAIN]`` or ``[OK]``, and never raises; the strict version (raises
``ExerciseError``, returns True) is ``check_x.__wrapped__``. ``solution(n)`` shows the answer to
exercise ``n``.
"""

from __future__ import annotations

from helpers.exercises import solution_lookup
from helpers.exercises.ch4.deployment import (
    TODO_CAUTIOUS,
    TODO_TORCHRUN,
    check_cautious_predict,
    check_torchrun_command,
)
from helpers.exercises.ch4.training import (
    TODO_EXTENDED,
    TODO_PREDICT,
    TODO_RESUME,
    check_extended_model,
    check_predict_function,
    check_resume_training,
)
from helpers.exercises.solutions import CH4 as SOLUTIONS

solution = solution_lookup(4, SOLUTIONS)

__all__ = ["SOLUTIONS", "TODO_CAUTIOUS", "TODO_EXTENDED", "TODO_PREDICT", "TODO_RESUME",
           "TODO_TORCHRUN", "check_cautious_predict", "check_extended_model",
           "check_predict_function", "check_resume_training", "check_torchrun_command", "solution"]
