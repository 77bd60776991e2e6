"""``BestAndLast``: fit's callback that writes ``last.pt`` every epoch and ``best.pt`` on improvement.

>>> save = BestAndLast("runs/train", model=model, optimizer=optimizer, scheduler=scheduler)
>>> fit(model, data, optimizer, epochs=4, scheduler=scheduler, callback=save)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from helpers.checkpoint.errors import PathLike
from helpers.checkpoint.training import save_checkpoint
from helpers.i18n import _


def _rank_zero() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class BestAndLast:
    """``callback(epoch, history)`` for ``fit``: ``last.pt`` after every epoch (resumable: model,
    optimizer, scheduler, scaler, RNG, history), ``best.pt`` when ``history.<metric>[-1]`` beats the
    best so far (the model, the epoch and the same extras, to deploy or fine-tune from).

    Both files carry ``history`` (``history.to_dict()``), ``best_key`` (``best_acc``: the best
    metric so far) and ``extras`` (class names, a config...). Each write is atomic. Under
    ``torch.distributed`` every rank tracks the best (all evaluate the same weights) but only rank 0
    writes (``save=None`` decides that; pass ``save=False`` to write nothing), then all ranks wait
    for it. After a resume, an epoch must beat the best of the history ``fit`` continues (or
    ``best=``, e.g. the checkpoint's ``best_acc``) to replace ``best.pt``; ties keep the older one.

    >>> save = BestAndLast(runs / "train", model=net, optimizer=opt, scheduler=sched,
    ...                    class_names=data.class_names)
    >>> fit(net, data, opt, epochs=3, scheduler=sched, callback=save)  # doctest: +SKIP
    >>> save.best, save.best_epoch  # doctest: +SKIP
    (0.97, 2)
    """

    def __init__(self, folder: PathLike, *, model: nn.Module, optimizer: Any = None,
                 scheduler: Any = None, scaler: Any = None, metric: str = "val_acc",
                 mode: str = "max", best: float | None = None, best_key: str = "best_acc",
                 save: bool | None = None, last_name: str = "last.pt", best_name: str = "best.pt",
                 **extras: Any) -> None:
        if mode not in ("max", "min"):
            raise ValueError(_("mode must be 'max' (accuracy) or 'min' (loss), got {mode!r}").format(
                                 mode=mode))
        if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
            raise ValueError(_("best must be a number (the best {metric} so far) or None, got "
                               "{best!r}").format(
                                 metric=metric, best=best))
        self.folder = Path(folder)
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.metric, self.mode, self.best_key = metric, mode, best_key
        self.best: float | None = None if best is None else float(best)
        self.best_epoch: int | None = None
        self.save = _rank_zero() if save is None else bool(save)
        self.last_path, self.best_path = self.folder / last_name, self.folder / best_name
        self.extras = extras

    def _values(self, history: Any) -> list[float]:
        values = history[self.metric] if isinstance(history, Mapping) else getattr(history,
                                                                                    self.metric, None)
        if not values:
            raise ValueError(_("the history has no {metric!r} values; pass metric= one of the metrics "
                               "fit records (val_acc, val_loss, train_loss...)").format(metric=self.metric))
        return [float(v) for v in values]

    def improved(self, value: float) -> bool:
        """True when ``value`` beats the best so far (a NaN never does)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def __call__(self, epoch: int, history: Any) -> None:
        *earlier, value = self._values(history)
        if self.best is None:  # resumed with a history: the epochs before count too
            for old in earlier:
                if self.improved(old):
                    self.best = old
        better = self.improved(value)
        if better:
            self.best, self.best_epoch = value, epoch
        if self.save:
            history_dict = history.to_dict() if hasattr(history, "to_dict") else dict(history)
            extras = {**self.extras, "history": history_dict, self.best_key: self.best}
            self._write(self.last_path, model=self.model, optimizer=self.optimizer,
                        scheduler=self.scheduler, scaler=self.scaler, epoch=epoch, **extras)
            if better:
                self._write(self.best_path, model=self.model, epoch=epoch, **extras)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()  # nobody reads or resumes before rank 0 has written

    def _write(self, path: Path, **parts: Any) -> None:
        save_checkpoint(path, **parts)


class ShardedBestAndLast(BestAndLast):
    """``BestAndLast`` writing DCP folders (``last``, ``best``) with ``save_sharded``: every rank
    writes its shards, so every rank must call it (it is collective; ``save`` is always on).

    >>> save = ShardedBestAndLast(runs / "dcp", model=net, optimizer=opt, scheduler=sched)
    >>> fit(net, data, opt, epochs=3, scheduler=sched, callback=save)  # doctest: +SKIP
    """

    def __init__(self, folder: PathLike, *, last_name: str = "last", best_name: str = "best",
                 **kwargs: Any) -> None:
        kwargs.pop("save", None)
        super().__init__(folder, save=True, last_name=last_name, best_name=best_name, **kwargs)

    def _write(self, path: Path, **parts: Any) -> None:
        from helpers.checkpoint.sharded import save_sharded  # imports DCP (seconds) on first use

        save_sharded(path, **parts)
