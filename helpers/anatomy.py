"""The texts in ``helpers.diagrams.checkpoint_anatomy``'s boxes, one per part of a checkpoint.

>>> parts_from_dict({"epoch": 2})
{'epoch': 'epochs done: 3\nnext epoch: 4'}

Read from a loaded checkpoint (``parts_from_dict``) or from the lines of
``helpers.checkpoint.checkpoint_summary`` (``parts_from_summary``); no matplotlib here. The
texts are in the learner's language (``helpers.i18n``); keys, values and code stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from helpers.i18n import _

#: The parts ``checkpoint_anatomy`` draws, in its order.
PART_KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best", "rng", "extras")


def _cut(text: str, width: int = 30) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _short(value: Any, width: int = 34) -> str:
    return _cut(f"{value:.4g}" if isinstance(value, float) else repr(value), width)


def _epochs(done: int | str, upcoming: int | str) -> str:
    return _("epochs done: {done}\nnext epoch: {next}").format(done=done, next=upcoming)


def _more(count: int) -> str:
    return _("... {count} more").format(count=count)


def parts_from_dict(checkpoint: Mapping[str, Any]) -> dict[str, str]:
    """Box texts from a loaded checkpoint. ``parts_from_dict({"epoch": 2})["epoch"]``"""
    parts: dict[str, str] = {}
    model = checkpoint.get("model", checkpoint.get("model_state_dict"))
    if isinstance(model, Mapping):
        values = sum(getattr(t, "numel", lambda: 0)() for t in model.values())
        first = _cut(str(next(iter(model), "")))
        parts["model"] = _("state_dict: {count} tensors\n{values} values\nfirst: {first}").format(
            count=len(model), values=f"{values:,}", first=first)
    optimizer = checkpoint.get("optimizer", checkpoint.get("optimizer_state_dict"))
    if isinstance(optimizer, Mapping):
        groups = optimizer.get("param_groups", [])
        lr = groups[0].get("lr") if groups else None
        parts["optimizer"] = (
            _("state for {count} tensors\n{groups} param group(s)").format(
                count=len(optimizer.get("state", {})), groups=len(groups))
            + (_(", lr {lr}").format(lr=f"{lr:.3g}") if lr else ""))
    if isinstance(checkpoint.get("scheduler"), Mapping):
        steps = checkpoint["scheduler"].get("last_epoch")
        if not isinstance(steps, int):
            parts["scheduler"] = f"last_epoch {steps!r}"
        elif steps == 1:
            parts["scheduler"] = _("stepped once\n(its last_epoch)")
        else:
            parts["scheduler"] = _("stepped {steps} times\n(its last_epoch)").format(steps=steps)
    if isinstance(checkpoint.get("scaler"), Mapping):
        scale = checkpoint["scaler"].get("scale")
        parts["scaler"] = (_("scale {scale}").format(scale=f"{scale:g}")
                           if isinstance(scale, (int, float)) else _("saved"))
    if "epoch" in checkpoint:
        epoch = checkpoint["epoch"]
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
            # the file stores fit's 0-based index of the last finished epoch; people count from 1
            parts["epoch"] = _epochs(epoch + 1, epoch + 2)
        else:
            parts["epoch"] = _("{value}\n(cannot resume)").format(value=_short(epoch))
    if isinstance(checkpoint.get("rng"), Mapping):
        parts["rng"] = _("generators:\n{names}").format(names=", ".join(map(str, checkpoint["rng"])))
    known = {"model", "model_state_dict", "optimizer", "optimizer_state_dict", "scheduler",
             "scaler", "epoch", "rng", "format"}
    best = [f"{k} = {_short(v)}" for k, v in checkpoint.items() if str(k).startswith("best")]
    extras = [f"{k} = {_short(v, 24)}" for k, v in checkpoint.items()
              if k not in known and not str(k).startswith("best")]
    if best:
        parts["best"] = "\n".join(best)
    if extras:
        parts["extras"] = "\n".join(extras[:4] + ([_more(len(extras) - 4)]
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
            found = re.fullmatch(r"epochs done: (\S+), next epoch: (\S+)", line.strip())
            parts["epoch"] = _epochs(*found.groups()) if found else line.replace(", ", "\n")
        elif name in PART_KEYS:
            pieces = text.split(", ")
            cut = next((i for i, p in enumerate(pieces) if p.startswith("first keys")), None)
            if cut is not None:  # one first key is enough
                first = _cut(pieces[cut].split(": ", 1)[-1], 23)
                pieces = [*pieces[:cut], _("first: {key}").format(key=first)]
            parts[name] = "\n".join(_cut(p) for p in pieces[:4])
    return parts
