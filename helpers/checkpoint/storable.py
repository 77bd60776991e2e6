"""What may go into a checkpoint: exactly what ``torch.load(weights_only=True)`` accepts.

>>> _unsafe_reason({"lr": 0.1}) is None
True
"""

from __future__ import annotations

import io
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.checkpoint.errors import _SHORT, PLAIN_TYPES_ADVICE, CheckpointError, _first_line
from helpers.i18n import _


def _tensors_emptied(value: Any) -> Any:
    """The same structure with every tensor replaced by an empty one (cheap to pickle)."""
    if type(value) in (Tensor, nn.Parameter):
        return torch.empty(0)
    if type(value) in (dict, OrderedDict):
        return type(value)((k, _tensors_emptied(v)) for k, v in value.items())
    if type(value) in (list, tuple):
        return type(value)(_tensors_emptied(v) for v in value)
    return value


_PLAIN_LEAVES = (Tensor, nn.Parameter, int, float, str, bool, type(None))


def _plainly_storable(value: Any) -> bool:
    """True for tensors, numbers, strings and None nested in dicts, lists and tuples: what a
    state_dict or a training history is made of. These always load with ``weights_only=True``,
    so the slower round trip below is needed only for anything else."""
    kind = type(value)
    if kind in _PLAIN_LEAVES:
        return True
    if kind in (dict, OrderedDict):
        return all(type(k) in (str, int) and _plainly_storable(v) for k, v in value.items())
    if kind in (list, tuple):
        return all(_plainly_storable(v) for v in value)
    return False


def _unsafe_reason(value: Any) -> str | None:
    """Why ``torch.load(weights_only=True)`` would refuse ``value``, or None when it would load."""
    if _plainly_storable(value):
        return None
    buffer = io.BytesIO()
    try:
        torch.save(_tensors_emptied(value), buffer)
    except Exception as exc:  # lambdas, open files, locks...
        return _("it cannot be pickled ({type}: {first_line})").format(
                   type=type(exc).__name__, first_line=_first_line(exc))
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=True)
    except Exception as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = found.group(1) if found else _first_line(exc)
        return _("torch.load(weights_only=True) refuses {what}").format(what=what)
    return None


def _check_storable(path: Path, parts: Mapping[str, Any]) -> None:
    for name, value in parts.items():
        reason = _unsafe_reason(value)
        if reason is not None:
            shown = _SHORT.repr(value)
            raise CheckpointError(path, _("cannot store {name} = {shown}: {reason}").format(
                                            name=name, shown=shown, reason=reason),
                                  _(PLAIN_TYPES_ADVICE) + _(" Nothing was written."))
