"""Training checkpoints: weights, optimizer, scheduler, AMP scaler, epoch and RNG states.

>>> save_checkpoint("runs/last.pt", model=model, optimizer=optimizer, epoch=3, best_acc=0.97)
PosixPath('runs/last.pt')
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from helpers.checkpoint.atomic import _atomic_write, remove_stale_temps
from helpers.checkpoint.errors import (
    _SHORT,
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
from helpers.checkpoint.validate import check_epoch, check_parts
from helpers.checkpoint.weights import _plan_state
from helpers.i18n import _


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


def _check_save_args(path: Path, epoch: Any, extra: dict[str, Any]) -> None:
    """What every checkpoint writer refuses first: a non-int epoch, an extra with a reserved name."""
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise CheckpointError(path, _("epoch must be an int, got {epoch!r}").format(epoch=epoch),
                              _("Pass the number of the epoch just finished, e.g. epoch=3."))
    clash = sorted(RESERVED_KEYS & set(extra))
    if clash:
        raise CheckpointError(path, _("{clash!r} is a reserved checkpoint key").format(clash=clash[0]),
                              _("Rename that extra; reserved: {RESERVED_KEYS}.").format(
                                  RESERVED_KEYS=sorted(RESERVED_KEYS)))


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
    _check_save_args(path, epoch, extra)
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
    remove_stale_temps(path.parent)
    if not isinstance(obj, Mapping) or "epoch" not in obj:
        what = _("weights (a state_dict)") if _is_state_dict(obj) else _("no epoch number")
        raise CheckpointError(path, _("it holds {what}, not a training checkpoint").format(what=what),
                              _("Load it with load_weights(model, path) and train from epoch 0, or pass "
                                "a file written by save_checkpoint."))
    # Check everything first, then apply: a refused file leaves every object as it was.
    epoch = check_epoch(path, obj["epoch"])
    state = _plan_state(model, _find_weights(obj, path), path)
    parts = []
    for name, target, keys in (("optimizer", optimizer, ("optimizer", "optimizer_state_dict")),
                               ("scheduler", scheduler, ("scheduler", "scheduler_state_dict")),
                               ("scaler", scaler, ("scaler", "scaler_state_dict"))):
        key = next((k for k in keys if k in obj), None)
        if target is not None and key is None:
            raise CheckpointError(path, _("it holds no {name} state").format(name=name),
                                  _("It was saved without {name}=...; leave out {name}= here or build a "
                                    "fresh {name}.").format(name=name))
        if target is not None:
            parts.append((name, target, obj[key]))
    check_parts(path, parts)  # types, lengths, shapes and ranges against the live objects
    rng = obj.get("rng") if restore_rng else None
    if rng is not None:
        _check_rng(rng, path)
    _apply(path, unwrap_model(model), state, parts, rng)
    extras = {k: v for k, v in obj.items() if k not in _KNOWN}
    return {"epoch": epoch, "start_epoch": epoch + 1, **extras}


_KNOWN = RESERVED_KEYS | set(WEIGHT_KEYS) | {"optimizer_state_dict", "scheduler_state_dict",
                                            "scaler_state_dict"}


def _check_rng(rng: Any, path: Path) -> None:
    """Try each saved RNG state on the live generators, then put theirs back: a bad field is
    named now instead of failing after the model was already loaded."""
    if not isinstance(rng, Mapping):
        raise CheckpointError(path, _("its rng entry is {rng}, not a dict of RNG states").format(
                                        rng=_SHORT.repr(rng)),
                              _("Load with restore_rng=False to skip it, or use another checkpoint."))
    saved = _rng_state()
    try:
        for name in ("python", "numpy", "torch", "cuda"):
            if name not in rng:
                continue
            try:
                if name == "cuda":
                    bad = not isinstance(rng["cuda"], (list, tuple)) or not all(
                        isinstance(t, Tensor) and t.dtype == torch.uint8 for t in rng["cuda"])
                    if bad:
                        raise TypeError(_("expected a list of uint8 tensors"))
                else:
                    _restore_rng({name: rng[name]})
            except Exception as exc:
                raise CheckpointError(
                    path, _("rng[{name!r}] is not a valid {name} RNG state ({type}: {first_line})").format(
                              name=name, type=type(exc).__name__, first_line=_first_line(exc)),
                    _("The file was not written by save_checkpoint or was edited. Load with "
                      "restore_rng=False to skip the RNG states, or use another checkpoint.")) from None
    finally:
        _restore_rng(saved)


def _apply(path: Path, model: nn.Module, state: Mapping[str, Any],
           parts: list[tuple[str, Any, Any]], rng: Mapping[str, Any] | None) -> None:
    """Load everything checked; if any part still refuses, put every object back as it was."""
    before_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    before_parts = [(target, copy.deepcopy(target.state_dict())) for _, target, _ in parts]
    before_rng = _rng_state()
    try:
        for name, target, part in parts:
            try:
                target.load_state_dict(part)
            except Exception as exc:
                raise CheckpointError(
                    path, _("the {name} state does not fit ({type}: {first_line})").format(
                              name=name, type=type(exc).__name__, first_line=_first_line(exc)),
                    _("Build the {name} as when saving (same type, same parameters in the same order "
                      "and groups).").format(name=name)) from None
        model.load_state_dict(state, strict=False)
        if rng is not None:
            _restore_rng(rng)
    except BaseException:
        model.load_state_dict(before_model, strict=False)
        for target, part in before_parts:
            target.load_state_dict(part)
        _restore_rng(before_rng)
        raise
