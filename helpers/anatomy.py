"""The texts in ``helpers.diagrams.checkpoint_anatomy``'s boxes, one per part of a checkpoint.

>>> parts_from_dict({"epoch": 2})
{'epoch': 'epochs done: 3\nnext epoch: 4'}

Read from a loaded checkpoint (``parts_from_dict``) or from the lines of
``helpers.checkpoint.checkpoint_summary`` (``parts_from_summary``); no matplotlib here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: The parts ``checkpoint_anatomy`` draws, in its order.
PART_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best", "rng", "extras")


def _cut(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _short(value: Any, width: int = 34) -> str:
    return _cut(f"{value:.4g}" if isinstance(value, float) else repr(value), width)


def parts_from_dict(checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """Box texts from a loaded checkpoint. ``parts_from_dict({"epoch": 2})["epoch"]``"""
    parts: dict[str, str] = {}
    model = checkpoint.get("model", checkpoint.get("model_state_dict"))
    if isinstance(model, Mapping):
        values = sum(getattr(t, "numel", lambda: 0)() for t in model.values())
        first = _cut(str(next(iter(model), "")))
        parts["model"] = f"state_dict: {len(model)} tensors\n{values:,} values\nfirst: {first}"
    optimizer = checkpoint.get("optimizer", checkpoint.get("optimizer_state_dict"))
    if isinstance(optimizer, Mapping):
        groups = optimizer.get("param_groups", [])
        lr = groups[0].get("lr") if groups else None
        parts["optimizer"] = (f"state for {len(optimizer.get('state', {}))} tensors\n"
                              f"{len(groups)} param group(s)" + (f", lr {lr:.3g}" if lr else ""))
    if isinstance(checkpoint.get("scheduler"), Mapping):
        steps = checkpoint["scheduler"].get("last_epoch")
        parts["scheduler"] = (f"stepped {'once' if steps == 1 else f'{steps} times'}\n"
                              f"(its last_epoch)" if isinstance(steps, int)
                              else f"last_epoch {steps!r}")
    if isinstance(checkpoint.get("scaler"), Mapping):
        scale = checkpoint["scaler"].get("scale")
        parts["scaler"] = f"scale {scale:g}" if isinstance(scale, (int, float)) else "saved"
    if "epoch" in checkpoint:
        epoch = checkpoint["epoch"]
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
            # the file stores fit's 0-based index of the last finished epoch; people count from 1
            parts["epoch"] = f"epochs done: {epoch + 1}\nnext epoch: {epoch + 2}"
        else:
            parts["epoch"] = f"{_short(epoch)}\n(cannot resume)"
    if isinstance(checkpoint.get("rng"), Mapping):
        parts["rng"] = "generators:\n" + ", ".join(map(str, checkpoint["rng"]))
    known = {"model", "model_state_dict", "optimizer", "optimizer_state_dict", "scheduler",
             "scaler", "epoch", "rng", "format"}
    best = [f"{k} = {_short(v)}" for k, v in checkpoint.items() if str(k).startswith("best")]
    extras = [f"{k} = {_short(v, 24)}" for k, v in checkpoint.items()
              if k not in known and not str(k).startswith("best")]
    if best:
        parts["best"] = "\n".join(best)
    if extras:
        parts["extras"] = "\n".join(extras[:4] + ([f"... {len(extras) - 4} more"]
                                                  if len(extras) > 4 else []))
    return parts


def parts_from_summary(summary: str) -> dict[str, str]:
    """Box texts from the lines of ``helpers.checkpoint.checkpoint_summary`` ("name: text").

    >>> parts_from_summary("last.pt\nepochs done: 3, next epoch: 4")["epoch"]
    'epochs done: 3\nnext epoch: 4'
    """
    parts: dict[str, str] = {}
    for line in summary.splitlines()[1:]:
        name, sep, text = line.partition(": ")
        if not sep:
            continue
        if name == "extras":
            items = [item.strip() for item in re.split(r", (?=\w+=)", text)]
            best = [i for i in items if i.startswith("best")]
            rest = [i for i in items if not i.startswith("best")]
            if best:
                parts["best"] = "\n".join(_cut(i) for i in best)
            if rest:
                parts["extras"] = "\n".join(_cut(i) for i in rest[:4])
        elif name == "epochs done":  # "epochs done: 3, next epoch: 4"
            parts["epoch"] = line.replace(", ", "\n")
        elif name in PART_KEYS:
            pieces = text.split(", ")
            cut = next((i for i, p in enumerate(pieces) if p.startswith("first keys")), None)
            if cut is not None:  # one first key is enough
                pieces = [*pieces[:cut], "first: " + _cut(pieces[cut].split(": ", 1)[-1], 23)]
            parts[name] = "\n".join(_cut(p) for p in pieces[:4])
    return parts
