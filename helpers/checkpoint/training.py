"""Training checkpoints: weights, optimizer, scheduler, AMP scaler, epoch and RNG states.

>>> save_checkpoint("runs/last.pt", model=model, optimizer=optimizer, epoch=3, best_acc=0.97)
PosixPath('runs/last.pt')
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from helpers.checkpoint.atomic import _atomic_write
from helpers.checkpoint.errors import (
    FORMAT,
    RESERVED_KEYS,
    WEIGHT_KEYS,
    CheckpointError,
    PathLike,
    _first_line,
)
from helpers.checkpoint.prefixes import unwrap_model
from helpers.checkpoint.reading import _find_weights, _is_state_dict, _read
from helpers.checkpoint.storable import _check_storable
from helpers.checkpoint.weights import _load_state


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": (int(version), tuple(int(x) for x in internal),
                   None if gauss is None else float(gauss)),
        "numpy": {"bit_generator": str(numpy_state["bit_generator"]),
                  "key": [int(x) for x in numpy_state["state"]["key"]],
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: Mapping[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["bit_generator"], np.asarray(s["key"], dtype=np.uint32), s["pos"],
                             s["has_gauss"], s["gauss"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        count = min(len(state["cuda"]), torch.cuda.device_count())
        for index in range(count):
            torch.cuda.set_rng_state(state["cuda"][index].cpu(), index)


def save_checkpoint(path: PathLike, *, model: nn.Module, optimizer: Any = None,
                    scheduler: Any = None, scaler: Any = None, epoch: int, **extra: Any) -> Path:
    """Write one resumable file: weights, optimizer, scheduler, AMP scaler, epoch, RNG, extras.

    ``epoch`` is the epoch just finished (``fit`` passes it to its callback). Extras (best metric,
    class names, a config dict, ``history.to_dict()``...) must load under ``weights_only=True``;
    anything else is refused before the file is touched. The write is atomic.

    >>> save_checkpoint("runs/last.pt", model=model, optimizer=optimizer, epoch=2, best_acc=0.9)
    PosixPath('runs/last.pt')
    """
    path = Path(path)
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise CheckpointError(path, f"epoch must be an int, got {epoch!r}",
                              "Pass the number of the epoch just finished, e.g. epoch=3.")
    clash = sorted(RESERVED_KEYS & set(extra))
    if clash:
        raise CheckpointError(path, f"{clash[0]!r} is a reserved checkpoint key",
                              f"Rename that extra; reserved: {sorted(RESERVED_KEYS)}.")
    checkpoint: dict[str, Any] = {"format": FORMAT, "epoch": epoch,
                                  "model": unwrap_model(model).state_dict()}
    for name, part in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if part is not None:
            checkpoint[name] = part.state_dict()
    checkpoint["rng"] = _rng_state()
    checkpoint.update(extra)
    _check_storable(path, checkpoint)
    _atomic_write(path, lambda f: torch.save(checkpoint, f))
    return path


def load_checkpoint(path: PathLike, *, model: nn.Module, optimizer: Any = None,
                    scheduler: Any = None, scaler: Any = None, map_location: Any = "cpu",
                    restore_rng: bool = True) -> dict[str, Any]:
    """Restore what ``save_checkpoint`` wrote into the objects given; return epoch info and extras.

    The result holds ``epoch`` (the last finished epoch), ``start_epoch`` (``epoch + 1``, where
    training resumes) and every extra. RNG states of Python, NumPy, torch and CUDA come back too
    (CUDA only when CUDA is available here), so a resumed run continues bit for bit.

    >>> info = load_checkpoint("runs/last.pt", model=model, optimizer=optimizer)
    >>> fit(model, data, optimizer, epochs=10, start_epoch=info["start_epoch"])  # doctest: +SKIP
    """
    path = Path(path)
    obj = _read(path, map_location=map_location, mmap=False)
    if not isinstance(obj, Mapping) or "epoch" not in obj:
        what = "weights (a state_dict)" if _is_state_dict(obj) else "no epoch number"
        raise CheckpointError(path, f"it holds {what}, not a training checkpoint",
                              "Load it with load_weights(model, path) and train from epoch 0, or "
                              "pass a file written by save_checkpoint.")
    _load_state(model, _find_weights(obj, path), path)
    parts = (("optimizer", optimizer, ("optimizer", "optimizer_state_dict")),
             ("scheduler", scheduler, ("scheduler", "scheduler_state_dict")),
             ("scaler", scaler, ("scaler", "scaler_state_dict")))
    for name, target, keys in parts:
        if target is None:
            continue
        key = next((k for k in keys if k in obj), None)
        if key is None:
            raise CheckpointError(path, f"it holds no {name} state",
                                  f"It was saved without {name}=...; leave out {name}= here or "
                                  f"build a fresh {name}.")
        try:
            target.load_state_dict(obj[key])
        except Exception as exc:
            raise CheckpointError(
                path, f"the {name} state does not fit ({type(exc).__name__}: {_first_line(exc)})",
                f"Build the {name} as when saving (same type, same parameters in the same order "
                f"and groups).") from None
    if restore_rng and isinstance(obj.get("rng"), Mapping):
        _restore_rng(obj["rng"])
    known = RESERVED_KEYS | set(WEIGHT_KEYS) | {k for _, _, keys in parts for k in keys}
    extras = {k: v for k, v in obj.items() if k not in known}
    epoch = int(obj["epoch"])
    return {"epoch": epoch, "start_epoch": epoch + 1, **extras}
