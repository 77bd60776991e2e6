"""The training loop: ``train_one_epoch``, ``evaluate`` and ``fit`` with a per-epoch callback.

>>> history = fit(model, data, optimizer, epochs=3, progress=False)
>>> history.val_acc[-1]
0.97...

Model and data already sit on the device (see ``helpers.data``), so the loop moves nothing per batch,
and losses are summed on the device and read once per epoch (no ``.item()`` per step). Batches come
from a ``torch.utils.data.DataLoader`` (``helpers.data.make_loader``).

Frozen BatchNorm stays frozen: ``model.train()`` would switch every BatchNorm layer back to updating
its running mean and variance, so ``train_one_epoch`` keeps in eval mode each BatchNorm layer whose
parameters are all frozen (``requires_grad=False``), and each one the learner put in eval mode while
the model itself is in training mode (``set_batchnorm_eval``). ``FrozenBatchNorm2d`` has no train
mode to lose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from helpers.data import ImageData, Split, make_loader, set_epoch
from helpers.i18n import _
from helpers.report import measured

LossFn = Callable[[Tensor, Tensor], Tensor]
Callback = Callable[[int, "History"], Any]
MAX_HISTORY = 1_000_000  # entries per metric that History.from_dict accepts


@dataclass
class History:
    """Per-epoch metrics. ``epoch[i]`` is the 0-based epoch that produced the i-th entries;
    ``lr[i]`` is the first parameter group's learning rate at the start of that epoch."""

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
        """Plain lists, safe to store in a ``weights_only`` checkpoint (shallow copies: no deep
        copy of whatever a list holds)."""
        return {f.name: list(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, list]) -> History:
        """The inverse of ``to_dict``; anything but the known keys, each a list of at most
        ``MAX_HISTORY`` numbers, raises ``ValueError`` naming the field (a file may be tampered).

        >>> History.from_dict({"epoch": [0], "val_acc": [0.5]}).val_acc
        [0.5]
        """
        if not isinstance(data, dict):
            raise ValueError(_("history must be a dict of lists, got {type}").format(
                                 type=type(data).__name__))
        known = {f.name for f in fields(cls)}
        for key, values in data.items():
            if key not in known:
                raise ValueError(_("history has the unexpected key {key!r}; known: {known}").format(
                                     key=str(key)[:40], known=sorted(known)))
            if not isinstance(values, (list, tuple)) or len(values) > MAX_HISTORY:
                raise ValueError(_("history[{key!r}] must be a list of at most {maximum:,} numbers").format(
                                     key=key, maximum=MAX_HISTORY))
            kind = int if key == "epoch" else (int, float)
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, kind)]
            if bad or (key == "epoch" and any(v < 0 for v in values)):
                what = _("whole numbers >= 0") if key == "epoch" else _("numbers")
                raise ValueError(_("history[{key!r}] must hold {what}, got {got}").format(
                    key=key, what=what, got=type(bad[0]).__name__ if bad else _("a negative one")))
        return cls(**{k: list(v) for k, v in data.items()})

    def __len__(self) -> int:
        return len(self.epoch)


def frozen_batchnorm(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers that training must leave in eval mode (running statistics frozen).

    A layer counts as frozen when all its parameters have ``requires_grad=False``, or when it is in
    eval mode while ``model`` is in training mode (``set_batchnorm_eval`` after ``model.train()``).
    A model that is entirely in eval mode (after ``model.eval()``) freezes nothing by the second rule.

    >>> frozen_batchnorm(freeze(nn.BatchNorm2d(4)))
    [BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)]
    """
    frozen = []
    for module in model.modules():
        if not isinstance(module, _BatchNorm):
            continue
        params = list(module.parameters(recurse=False))
        if (params and not any(p.requires_grad for p in params)) or (model.training
                                                                     and not module.training):
            frozen.append(module)
    return frozen


def train_mode(model: nn.Module) -> list[nn.Module]:
    """``model.train()`` that keeps frozen BatchNorm layers (``frozen_batchnorm``) in eval mode.

    Returns the layers it kept in eval mode.

    >>> train_mode(net)  # doctest: +SKIP
    [BatchNorm2d(64, ...), ...]
    """
    frozen = frozen_batchnorm(model)
    model.train()
    for module in frozen:
        module.eval()
    return frozen


def train_one_epoch(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]],
                    optimizer: torch.optim.Optimizer, loss_fn: LossFn = F.cross_entropy,
                    *, scheduler: Any = None) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy) over the samples seen.

    ``scheduler``, if given, steps after every batch (a one-cycle schedule planned per batch).
    Frozen BatchNorm layers stay in eval mode (see ``train_mode``).
    """
    train_mode(model)
    loss_sum: Tensor | float = 0.0
    correct: Tensor | int = 0
    count = 0
    for X, y in loader:
        logits = model(X)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        with torch.no_grad():
            loss_sum = loss_sum + loss.detach() * len(y)
            correct = correct + (logits.argmax(1) == y).sum()
        count += len(y)
    if count == 0:
        raise ValueError(_("the training loader yielded no batches; is the data set empty?"))
    return float(loss_sum) / count, int(correct) / count


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, loss_fn: LossFn = F.cross_entropy,
             *, batch_size: int = 1024) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on a split, in eval mode, without gradients.

    Afterwards every submodule is back in the mode it had (a frozen BatchNorm stays in eval mode).
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    loss_sum: Tensor | float = 0.0
    correct: Tensor | int = 0
    for X, y in make_loader(split, batch_size):
        logits = model(X)
        loss_sum = loss_sum + loss_fn(logits, y) * len(y)
        correct = correct + (logits.argmax(1) == y).sum()
    for module, training in modes:
        module.training = training
    return float(loss_sum) / len(split), int(correct) / len(split)


def one_cycle(optimizer: torch.optim.Optimizer, *, max_lr: float | list[float], epochs: int,
              steps_per_epoch: int, **kwargs: Any) -> torch.optim.lr_scheduler.OneCycleLR:
    """A one-cycle schedule planned per batch: pass it to ``fit(..., scheduler_step="batch")``.

    Warm-up to ``max_lr`` over the first 30% of ``epochs * steps_per_epoch`` optimizer steps, then
    cosine annealing down to ``max_lr / 25 / 1e4`` at the very last batch, so every epoch trains at
    a useful learning rate (planned per epoch instead, the whole last epoch runs at that floor).
    Other keyword arguments go to ``torch.optim.lr_scheduler.OneCycleLR``.

    >>> scheduler = one_cycle(optimizer, max_lr=1e-2, epochs=8, steps_per_epoch=len(loader))
    """
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(_("{name} must be a positive integer, got {value!r} (steps_per_epoch is "
                               "len(train_loader))").format(name=name, value=value))
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs,
                                               steps_per_epoch=steps_per_epoch, **kwargs)


def fit(model: nn.Module, data: ImageData, optimizer: torch.optim.Optimizer, *, epochs: int,
        batch_size: int = 64, scheduler: Any = None,
        scheduler_step: Literal["epoch", "batch"] = "epoch", loss_fn: LossFn = F.cross_entropy,
        start_epoch: int = 0, history: History | None = None, callback: Callback | None = None,
        train_loader: Iterable[tuple[Tensor, Tensor]] | None = None, progress: bool = True,
        desc: str = "training") -> History:
    """Train for epochs ``start_epoch .. epochs-1``; evaluate on ``data.val`` after each epoch.

    ``scheduler.step()`` runs once per epoch, or after every batch with ``scheduler_step="batch"``
    (``one_cycle(..., steps_per_epoch=len(train_loader))``). Without ``train_loader`` the batches
    come from ``make_loader(data.train, batch_size, shuffle=True)``; each epoch ``set_epoch``
    reaches a ``DistributedSampler`` inside the loader. ``callback(epoch, history)`` runs after each
    epoch (save a checkpoint there); returning ``True`` stops training early. Pass the ``history``
    of an interrupted run together with ``start_epoch`` to resume it. ``progress=False`` is the
    quiet mode for scripts and tests. Frozen BatchNorm layers stay frozen (see ``train_mode``).
    """
    if epochs < start_epoch:
        raise ValueError(_("epochs ({epochs}) is smaller than start_epoch ({start_epoch})").format(
                             epochs=epochs, start_epoch=start_epoch))
    if scheduler_step not in ("epoch", "batch"):
        raise ValueError(_("scheduler_step must be 'epoch' or 'batch', got {scheduler_step!r}").format(
                             scheduler_step=scheduler_step))
    history = history if history is not None else History()
    loader = train_loader if train_loader is not None else make_loader(data.train, batch_size,
                                                                        shuffle=True)
    batch_scheduler = scheduler if scheduler_step == "batch" else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=start_epoch, desc=desc, unit="epoch")
    try:
        for epoch in range(start_epoch, epochs):
            set_epoch(loader, epoch)
            lr = optimizer.param_groups[0]["lr"]
            train_loss, train_acc = train_one_epoch(model, loader, optimizer, loss_fn,
                                                    scheduler=batch_scheduler)
            val_loss, val_acc = evaluate(model, data.val, loss_fn)
            if scheduler is not None and batch_scheduler is None:
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
        # The accuracy is a measurement (it differs in the last digits from CPU to CPU): the
        # sanitizer masks the number after the mark.
        print(_("{desc}: epoch {epoch}/{epochs} done, validation accuracy {accuracy}").format(
                  desc=desc, epoch=history.epoch[-1] + 1, epochs=epochs,
                  accuracy=measured(history.val_acc[-1])))
    return history
