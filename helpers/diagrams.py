"""Diagrams that teach faster than prose, drawn with matplotlib (PNG in every front end).

>>> containers()                                  # ch1: Sequential, ModuleList, ModuleDict, list
>>> state_dict_tree(ddp_model.state_dict())       # ch3: the key tree, wrapper prefixes in red
>>> checkpoint_anatomy(torch.load("runs/last.pt"))  # ch3: what a training checkpoint holds
>>> pipeline_flowchart()                          # ch4: define -> train -> ... -> resume

Each function returns a matplotlib ``Figure``; a notebook cell that ends with the call shows it as
a PNG image, which JupyterLab, Colab, VS Code and GitHub all render (mermaid and friends render
only in some). Nothing is written to disk; ``fig.savefig(...)`` if you want a file.

With ``COURSE_LANG=zh`` the labels are Chinese (``helpers.i18n``) and drawn with the CJK font the
package ships (``helpers.fonts``); code, API names and the learner's own keys stay as they are.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from matplotlib.figure import Figure

from helpers.anatomy import parts_from_dict, parts_from_summary
from helpers.fonts import chinese_labels, families
from helpers.i18n import N_, _

_F = TypeVar("_F", bound=Callable[..., Figure])


def _localized(draw: _F) -> _F:
    """Draw with the CJK font as fallback in the Chinese edition (English: unchanged)."""
    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with chinese_labels():
            return draw(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _width(text: str) -> int:
    """Width of ``text`` in Latin characters: a hanzi or full-width sign counts two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)

#: Box colours: (face, edge).
_BLUE = ("#dbe9f6", "#2b6cb0")
_GREEN = ("#dff3e4", "#2f855a")
_ORANGE = ("#fdebd3", "#c05621")
_PURPLE = ("#ece4f7", "#6b46c1")
_GREY = ("#f2f2f2", "#8a8a8a")
_RED = ("#fde2e1", "#c53030")


def _figure(width: float, height: float, ncols: int = 1, *,
            margins: Mapping[str, float] | None = None) -> tuple[Figure, Any]:
    """A figure whose axes run from 0 to 1 with no ticks or frame (we draw in axes units)."""
    import matplotlib.pyplot as plt  # activates the notebook's inline backend (PNG display)

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    if margins:
        fig.subplots_adjust(**margins)
    for ax in axes.flat:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
    plt.close(fig)  # the notebook shows the returned figure once, not twice
    return fig, (axes[0, 0] if ncols == 1 else list(axes.flat))


def _box(ax: Any, x: float, y: float, w: float, h: float, text: str,
         colors: tuple[str, str] = _BLUE, *, dashed: bool = False, size: float = 9,
         weight: str = "normal", align: str = "center") -> None:
    """A rounded box with its lower left corner at (x, y) and ``text`` inside."""
    from matplotlib.patches import FancyBboxPatch

    face, edge = colors
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.015",
                                facecolor=face, edgecolor=edge, linewidth=1.4,
                                linestyle="--" if dashed else "-"))
    tx = x + w / 2 if align == "center" else x + 0.02
    ax.text(tx, y + h / 2, text, ha=align, va="center", fontsize=size, weight=weight,
            color="#1a1a1a" if not dashed else "#555555", linespacing=1.3)


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], *,
           color: str = "#444444", style: str = "-|>", dashed: bool = False,
           curve: float = 0.0) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": style, "color": color, "lw": 1.3,
                            "linestyle": "--" if dashed else "-", "shrinkA": 0, "shrinkB": 0,
                            "connectionstyle": f"arc3,rad={curve}"})


# --- chapter 1: the containers ---------------------------------------------------------------------

@_localized
def containers() -> Figure:
    """The four ways to hold layers, side by side: who writes ``forward`` and what is registered.

    >>> containers()  # a figure: Sequential | ModuleList | ModuleDict | plain list
    """
    fig, axes = _figure(12, 4.2, ncols=4)
    panels: list[dict[str, Any]] = [
        {"title": "nn.Sequential", "colors": _BLUE, "arrows": True,
         "boxes": ["(conv) Conv2d", "(relu) ReLU", "(pool) AdaptiveAvgPool2d", "(fc) Linear"],
         "caption": _("forward is written for you:\neach layer feeds the next"),
         "registered": True},
        {"title": "nn.ModuleList", "colors": _GREEN, "arrows": False,
         "boxes": ["[0] Bottleneck", "[1] Bottleneck", "[2] Bottleneck", "[3] Bottleneck"],
         "caption": _("you write the loop:\nfor block in self.blocks: ..."),
         "registered": True},
        {"title": "nn.ModuleDict", "colors": _PURPLE, "arrows": False,
         "boxes": ["'relu'  ->  ReLU", "'gelu'  ->  GELU", "'prelu'  ->  PReLU"],
         "caption": _("you pick by name:\nself.acts[activation]"),
         "registered": True},
        {"title": _("plain list  [ ... ]"), "colors": _RED, "arrows": False,
         "boxes": ["Linear", "Linear", "Linear"],
         "caption": _("runs, but is invisible to\nparameters(), the optimizer,\n"
                      "state_dict() and .to()"),
         "registered": False},
    ]
    for ax, panel in zip(axes, panels, strict=True):
        ax.set_title(panel["title"], fontsize=12, family=families("monospace"), weight="bold",
                     color=panel["colors"][1])
        boxes = panel["boxes"]
        top, h, gap = 0.93, 0.1, 0.05
        for i, label in enumerate(boxes):
            y = top - (i + 1) * h - i * gap
            _box(ax, 0.1, y, 0.8, h, label, panel["colors"], dashed=not panel["registered"],
                 size=9)
            if panel["arrows"] and i:
                _arrow(ax, (0.5, y + h + gap), (0.5, y + h))
        if panel["title"] == "nn.ModuleList":
            first, last = top - h / 2, top - len(boxes) * (h + gap) + gap + h / 2
            _arrow(ax, (0.93, first), (0.93, last), curve=0.0, dashed=True,
                   color=panel["colors"][1])
        ax.text(0.5, 0.2, panel["caption"], ha="center", va="center", fontsize=9.5,
                linespacing=1.35)
        verdict = _("registered") if panel["registered"] else _("NOT registered")
        ax.text(0.5, 0.02, verdict, ha="center", va="center", fontsize=8.5,
                color=_GREEN[1] if panel["registered"] else _RED[1], weight="bold")
    fig.suptitle(_("Where the layers live decides who writes forward and what PyTorch can see"),
                 fontsize=12)
    fig.tight_layout()
    return fig


# --- chapter 3: state_dict keys and wrapper prefixes --------------------------------------------

def _keys_of(keys: Mapping[str, Any] | Iterable[str]) -> list[str]:
    names = list(keys.keys() if isinstance(keys, Mapping) else keys)
    if not names:
        raise ValueError(_("state_dict_tree got no keys; pass model.state_dict() or a list of "
                           "its keys"))
    bad = [k for k in names if not isinstance(k, str)]
    if bad:
        raise TypeError(_("state_dict keys are strings like 'fc.weight'; got {value} ({type}). "
                          "Pass model.state_dict() or its keys").format(
                              value=repr(bad[0]), type=type(bad[0]).__name__))
    return list(dict.fromkeys(names))  # a key drawn twice would be one leaf anyway


def _tree(keys: Sequence[str], prefixes: Sequence[str]) -> dict[str, Any]:
    """A nested dict of key parts; a wrapper prefix ('module.') is one node, never split."""
    root: dict[str, Any] = {}
    pattern = re.compile("|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True)))
    for key in keys:
        parts: list[str] = []
        rest = key
        while True:
            match = pattern.match(rest) if prefixes else None
            if not match:
                break
            parts.append(match.group(0))
            rest = rest[match.end():]
        parts += rest.split(".")
        node = root
        for part in parts:
            node = node.setdefault(part, {})
    return root


@_localized
def state_dict_tree(keys: Mapping[str, Any] | Iterable[str],
                    prefixes: Sequence[str] = ("module.", "_orig_mod."), *,
                    max_lines: int = 40, title: str | None = None) -> Figure:
    """The ``state_dict`` keys as a tree; wrapper prefixes (DDP's ``module.``, ``torch.compile``'s
    ``_orig_mod.``) are drawn in red, tensors (the leaves) in blue.

    Pass a state_dict or its keys. Sub-trees beyond ``max_lines`` lines are summarised as
    ``... N more``.

    >>> state_dict_tree(["module.fc.weight", "module.fc.bias"])  # module. -> fc -> weight, bias
    """
    names = _keys_of(keys)
    prefixes = tuple(prefixes)
    tree = _tree(names, prefixes)
    lines: list[tuple[int, str, str]] = []  # (depth, label, kind)

    shown = 0

    def walk(node: dict[str, Any], depth: int) -> None:
        nonlocal shown
        leaves = [name for name, child in node.items() if not child]
        if leaves and len(lines) < max_lines:  # the tensors of one module share a line
            lines.append((depth, ", ".join(leaves), "leaf"))
            shown += len(leaves)
        for name, child in node.items():
            if child and len(lines) < max_lines:
                lines.append((depth, name, "prefix" if name in prefixes else "module"))
                walk(child, depth + 1)

    walk(tree, 0)
    if shown < len(names):
        lines.append((0, _("... {count} more keys").format(count=len(names) - shown), "more"))
    height = 0.8 + 0.24 * len(lines)
    widest = max(0.3 * depth + 0.085 * _width(label) for depth, label, _kind in lines)  # inches
    fig, ax = _figure(max(5.0, 0.6 + widest), height,
                      margins={"left": 0.02, "right": 0.98, "top": 1 - 0.4 / height,
                               "bottom": 0.35 / height})
    step_y = 1 / (len(lines) + 1)
    indent = 0.3 / (fig.get_figwidth() - 0.2)  # 0.3 inch per level
    colors = {"prefix": _RED[1], "leaf": _BLUE[1], "module": "#1a1a1a", "more": "#777777"}
    parents: dict[int, float] = {}
    for i, (depth, label, kind) in enumerate(lines):
        y = 1 - (i + 1) * step_y
        x = 0.02 + depth * indent
        if depth and depth - 1 in parents and kind != "more":
            px = 0.02 + (depth - 1) * indent + indent * 0.3
            ax.plot([px, px, x - 0.008], [parents[depth - 1] - step_y * 0.35, y, y],
                    color="#9a9a9a", lw=0.9)
        ax.text(x, y, label, va="center",
                family=families("monospace"), fontsize=9.5, color=colors[kind],
                weight="bold" if kind == "prefix" else "normal",
                bbox={"facecolor": _RED[0], "edgecolor": _RED[1], "boxstyle": "round,pad=0.2"}
                if kind == "prefix" else None)
        parents[depth] = y
        for deeper in [d for d in parents if d > depth]:
            del parents[deeper]
    found = sorted({label for _depth, label, kind in lines if kind == "prefix"})
    if not found:
        found = sorted({p for p in prefixes if any(k.startswith(p) for k in names)})
    legend = (_("red: wrapper prefix {prefixes} (not part of the model; strip it before loading "
                "into the bare model)").format(prefixes=", ".join(repr(p) for p in found))
              if found else _("no wrapper prefix: these keys load into the bare model as they are"))
    ax.set_title(title or _("state_dict: {count} keys (blue: tensors)").format(count=len(names)),
                 fontsize=11, loc="left")
    fig.text(0.01, 0.01, legend, fontsize=8.5, color=_RED[1] if found else _GREEN[1])
    return fig


# --- chapter 3: a training checkpoint's anatomy -------------------------------------------------

#: The parts of a training checkpoint, in the order they are drawn: (key, title, colours).
_PARTS = (
    ("model", N_("model"), _BLUE),
    ("optimizer", N_("optimizer"), _GREEN),
    ("scheduler", N_("scheduler"), _GREEN),
    ("scaler", N_("AMP scaler"), _GREEN),
    ("epoch", N_("epoch"), _ORANGE),
    ("best", N_("best metric"), _ORANGE),
    ("rng", N_("rng"), _PURPLE),
    ("extras", N_("extras"), _GREY),
)


@_localized
def checkpoint_anatomy(checkpoint: Mapping[str, Any] | str | os.PathLike[str]) -> Figure:
    """What a training checkpoint holds: model, optimizer, scheduler, AMP scaler, epoch, best
    metric, RNG states and extras. A part the file lacks is drawn dashed ("not saved").

    Pass the loaded dict (``torch.load(path, weights_only=True)``), a checkpoint file's path, or
    the text of ``helpers.checkpoint.checkpoint_summary(path)`` (read in English only: a summary
    printed in another language is refused with a pointer to the path or the dict).

    >>> checkpoint_anatomy({"model": net.state_dict(), "epoch": 3, "best_acc": 0.9})
    """
    name = _("checkpoint")
    if isinstance(checkpoint, os.PathLike) or (isinstance(checkpoint, str)
                                                and "\n" not in checkpoint
                                                and os.path.isfile(checkpoint)):
        import torch

        path = os.fspath(checkpoint)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        name = os.path.basename(path)
    if isinstance(checkpoint, Mapping):
        parts = parts_from_dict(checkpoint)
        if checkpoint.get("format"):
            name = f"{name} ({checkpoint['format']})"
    elif isinstance(checkpoint, str):
        parts = parts_from_summary(checkpoint)
        name = checkpoint.splitlines()[0].split(",")[0] if checkpoint.strip() else name
    else:
        raise TypeError(_("checkpoint_anatomy takes a checkpoint dict, a path or the text of "
                          "checkpoint_summary(path); got {type}").format(
                              type=type(checkpoint).__name__))
    if not parts and isinstance(checkpoint, str):
        raise ValueError(_("found no part of a training checkpoint in this text; pass the "
                           "checkpoint's path or the loaded dict instead (a checkpoint_summary "
                           "is read only in English)"))
    if not parts:
        raise ValueError(_("found none of model, optimizer, scheduler, scaler, epoch, rng or "
                           "extras in it; pass a training checkpoint (see "
                           "helpers.checkpoint.save_checkpoint)"))
    fig, ax = _figure(11, 4.6)
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((0.01, 0.03), 0.98, 0.86, boxstyle="round,pad=0,rounding_size=0.02",
                                facecolor="white", edgecolor="#444444", linewidth=1.6))
    ax.text(0.02, 0.94, name, fontsize=12, weight="bold", va="center",
            family=families("monospace"))
    ax.text(0.98, 0.94, _("weights | resume state | bookkeeping"), fontsize=9, va="center",
            ha="right", color="#555555")
    cols, w, h = 4, 0.225, 0.38
    for i, (key, label, colors) in enumerate(_PARTS):
        x = 0.03 + (i % cols) * (w + 0.017)
        y = 0.47 - (i // cols) * (h + 0.04)
        present = key in parts
        text = f"{_(label)}\n\n" + (parts[key] if present else _("(not saved)"))
        _box(ax, x, y, w, h, text, colors if present else _GREY, dashed=not present, size=9)
    return fig


# --- chapter 4: the pipeline ----------------------------------------------------------------------

#: (stage, chapter, colours) of the course's pipeline, in order.
PIPELINE = (
    (N_("define"), N_("ch1"), _BLUE),
    (N_("train"), N_("ch1"), _BLUE),
    (N_("requirement\nchange"), N_("ch2"), _ORANGE),
    (N_("modify"), N_("ch2"), _GREEN),
    (N_("save"), N_("ch3"), _PURPLE),
    (N_("deploy /\nload"), N_("ch3, ch4"), _PURPLE),
    (N_("resume"), N_("ch3, ch4"), _PURPLE),
)


@_localized
def pipeline_flowchart() -> Figure:
    """The life of a model as the course follows it: define -> train -> requirement change ->
    modify -> save -> deploy/load -> resume (which trains on from the saved epoch).

    >>> pipeline_flowchart()
    """
    fig, ax = _figure(12, 3.0)
    w, gap, y, h = 0.112, (1 - 0.02 - len(PIPELINE) * 0.112) / (len(PIPELINE) - 1), 0.42, 0.3
    centers = []
    for i, (stage, chapter, colors) in enumerate(PIPELINE):
        x = 0.01 + i * (w + gap)
        _box(ax, x, y, w, h, _(stage), colors, size=9.5, weight="bold")
        ax.text(x + w / 2, y - 0.08, _(chapter), ha="center", va="center", fontsize=9,
                color="#555555")
        centers.append(x + w / 2)
        if i:
            _arrow(ax, (x - gap, y + h / 2), (x, y + h / 2))
    # resume goes back to training, from the saved epoch on
    _arrow(ax, (centers[-1], y - 0.13), (centers[1], y - 0.13), dashed=True, curve=-0.12,
           color=_PURPLE[1])
    ax.text((centers[1] + centers[-1]) / 2, 0.03, _("resume: train on from the saved epoch "
            "(model + optimizer + scheduler + epoch + rng)"), ha="center", va="bottom",
            fontsize=9, color=_PURPLE[1])
    ax.set_title(_("The life of a model, and the chapter that teaches each step"), fontsize=11)
    return fig
