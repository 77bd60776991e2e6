"""Plots: training curves and a grid of digits with the model's predictions.

>>> fig = plot_history(history)                     # loss and accuracy per epoch
>>> fig = plot_predictions(model, data.test, data.class_names)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from helpers.data import Split
from helpers.fonts import chinese_labels
from helpers.i18n import _
from helpers.training import History


def plot_history(*histories: History, labels: Sequence[str] | None = None, title: str | None = None):
    """Loss (left) and validation accuracy (right) per epoch, one line per history."""
    if labels is not None and len(labels) != len(histories):
        raise ValueError(_("got {histories} histories but {labels} labels").format(
            histories=len(histories), labels=len(labels)))
    with chinese_labels():  # axis texts in the learner's language (a no-op in English)
        return _plot_history(histories, labels, title)


def _plot_history(histories: Sequence[History], labels: Sequence[str] | None, title: str | None):
    import matplotlib.pyplot as plt

    labels = list(labels) if labels is not None else [
        _("run {number}").format(number=i + 1) for i in range(len(histories))]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.2))
    styles = (["-o", "--s", ":^", "-.d"] * len(histories))[:len(histories)]
    for history, label, style in zip(histories, labels, styles, strict=True):
        epochs = [e + 1 for e in history.epoch]
        ax_loss.plot(epochs, history.train_loss, style, markersize=4,
                     label=_("{label} (train)").format(label=label))
        ax_acc.plot(epochs, history.val_acc, style, markersize=4,
                    label=_("{label} (val)").format(label=label))
    ax_loss.set(xlabel=_("epoch"), ylabel=_("loss"), title=_("training loss"))
    ax_acc.set(xlabel=_("epoch"), ylabel=_("accuracy"), title=_("validation accuracy"))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # the notebook shows the returned figure once, not twice
    return fig


@torch.inference_mode()
def predict(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """Class indices for a batch, in eval mode without autograd.

    >>> predict(model, data.test.X[:4])
    tensor([...])
    """
    was_training = model.training
    model.eval()
    out = model(X)
    model.train(was_training)
    return (out[0] if isinstance(out, tuple) else out).argmax(1)


def plot_predictions(model: nn.Module, split: Split, class_names: Sequence[str], *, n: int = 24,
                     columns: int = 8, title: str | None = None):
    """The first ``n`` images of ``split`` with predicted labels (green right, red wrong)."""
    with chinese_labels():  # a learner's Chinese title renders too
        return _plot_predictions(model, split, class_names, n=n, columns=columns, title=title)


def _plot_predictions(model: nn.Module, split: Split, class_names: Sequence[str], *, n: int,
                      columns: int, title: str | None):
    import matplotlib.pyplot as plt

    X, y = split.X[:n], split.y[:n]
    pred = predict(model, X).cpu()
    rows = -(-len(y) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.1, rows * 1.25))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(y):
            continue
        ax.imshow(X[i].float().mean(0).cpu().numpy(), cmap="gray_r")  # an array: no __array__ warning
        ok = int(pred[i]) == int(y[i])
        ax.set_title(f"{class_names[int(pred[i])]}" + ("" if ok else f" ({class_names[int(y[i])]})"),
                     color="green" if ok else "red", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)
    return fig
