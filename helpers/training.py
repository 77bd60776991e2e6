"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit`` with a per-epoch callback.

>>> history = fit(model, data, optimizer, epochs=3, progress=False)
>>> history.val_acc[-1]
0.97...

Model and data already sit on the device (see ``helpers.data``), so the loop moves nothing per batch,
and losses are summed on the device and read once per epoch (no ``.item()`` per step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.data import BatchLoader, ImageData, Split

LossFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, "History"], Any]


@dataclass
class History:
    """Per-epoch metrics. ``epoch[i]`` is the 0-based epoch that produced the i-th entries."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)

    def append(self, **metrics: float) -> None:
        for key, value in metrics.items():
            getattr(self, key).append(value)

    def to_dict(self) -> dict[str, list]:
        """Plain lists, safe to store in a ``weights_only`` checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> History:
        return cls(**{k: list(v) for k, v in data.items()})

    def __len__(self) -> int:
        return len(self.epoch)


def train_one_epoch(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]],
                    optimizer: torch.optim.Optimizer,
                    loss_fn: LossFn = F.cross_entropy) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) over the samples seen."""
    model.train()
    loss_sum: Tensor | float = 0.0
    correct: Tensor | int = 0
    count = 0
    for X, y in loader:
        logits = model(X)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            loss_sum = loss_sum + loss.detach() * len(y)
            correct = correct + (logits.argmax(1) == y).sum()
        count += len(y)
    if count == 0:
        raise ValueError("the training loader yielded no batches; is the data set empty?")
    return float(loss_sum) / count, int(correct) / count


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, loss_fn: LossFn = F.cross_entropy,
             *, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on a split, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    loss_sum: Tensor | float = 0.0
    correct: Tensor | int = 0
    for X, y in BatchLoader(split, batch_size):
        logits = model(X)
        loss_sum = loss_sum + loss_fn(logits, y) * len(y)
        correct = correct + (logits.argmax(1) == y).sum()
    model.train(was_training)
    return float(loss_sum) / len(split), int(correct) / len(split)


def fit(model: nn.Module, data: ImageData, optimizer: torch.optim.Optimizer, *, epochs: int,
        batch_size: int = 64, scheduler: Any = None, loss_fn: LossFn = F.cross_entropy,
        start_epoch: int = 0, history: History | None = None, callback: Callback | None = None,
        train_loader: Iterable[tuple[Tensor, Tensor]] | None = None, progress: bool = True,
        desc: str = "training") -> History:
    """Train for epochs ``start_epoch .. epochs-1``; evaluate on ``data.val`` after each epoch.

    ``scheduler.step()`` runs once per epoch. ``callback(epoch, history)`` runs after each epoch
    (save a checkpoint there); returning ``True`` stops training early. Pass the ``history`` of an
    interrupted run together with ``start_epoch`` to resume it. ``progress=False`` is the quiet mode
    for scripts and tests.
    """
    if epochs < start_epoch:
        raise ValueError(f"epochs ({epochs}) is smaller than start_epoch ({start_epoch})")
    history = history if history is not None else History()
    loader = train_loader if train_loader is not None else BatchLoader(data.train, batch_size, shuffle=True)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc=desc, unit="epoch")
    try:
        for epoch in range(start_epoch, epochs):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            train_loss, train_acc = train_one_epoch(model, loader, optimizer, loss_fn)
            val_loss, val_acc = evaluate(model, data.val, loss_fn)
            if scheduler is not None:
                scheduler.step()
            history.append(epoch=epoch, train_loss=train_loss, train_acc=train_acc,
                           val_loss=val_loss, val_acc=val_acc, lr=lr)
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
                bar.update(1)
            if callback is not None and callback(epoch, history) is True:
                break
    finally:
        if bar is not None:
            bar.close()
    if bar is not None and len(history):
        # A notebook saves a progress widget in its first state (0%); this line records the outcome.
        print(f"{desc}: epoch {history.epoch[-1] + 1}/{epochs} done, "
              f"validation accuracy {history.val_acc[-1]:.2f}")
    return history
