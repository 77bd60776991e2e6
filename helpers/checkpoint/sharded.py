"""Sharded training checkpoints with ``torch.distributed.checkpoint`` (DCP): a folder, a file per rank.

>>> save_sharded("runs/dcp/last", model=model, optimizer=optimizer, epoch=3)  # on every rank
PosixPath('runs/dcp/last')

Every rank calls ``save_sharded``; each writes its own shards (``__<rank>_0.distcp``) and rank 0
the ``.metadata`` index. The folder holds what ``save_checkpoint`` puts in one file (model,
optimizer, scheduler, scaler, epoch, RNG states, extras) under the same names, so
``dcp_to_file`` (DCP's ``dcp_to_torch_save``) gives a file that ``load_checkpoint`` reads.
``load_sharded`` works on any number of ranks, or in one process without a process group.
DCP's format has no compatibility promise across PyTorch versions: convert long-lived
checkpoints to a file. ``.metadata`` is a pickle: only its known classes are let through here.
"""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from helpers.checkpoint.dcp_files import (
    _SINGLE_PROCESS,
    _clone,
    _resolve,
    _swap_in,
    _temp_name,
    check_keys,
    read_dcp_metadata,
    remove_stale_sharded_temps,
)
from helpers.checkpoint.errors import (
    DAMAGED_ADVICE,
    FORMAT,
    RESERVED_KEYS,
    CheckpointError,
    IncompatibleKeys,
    PathLike,
    _first_line,
)
from helpers.checkpoint.storable import _check_storable
from helpers.checkpoint.training import _check_rng, _check_save_args, _restore_rng, _rng_state
from helpers.i18n import _

_TENSOR_PARTS = ("model", "optimizer")  # checked key by key against the live objects


def _lowest_rank_planner() -> DefaultSavePlanner:
    """A tensor every rank holds (a BatchNorm buffer) is written once: rank 0's, as in a file."""
    return DefaultSavePlanner(dedup_save_to_lowest_rank=True)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (itself outside a process group)."""
    if not _distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ---------------------------------------------------------------------------------- saving
def _state(model: nn.Module, optimizer: Any) -> dict[str, Any]:
    if optimizer is None:
        return {"model": get_model_state_dict(model)}
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state}


def _rank_rng() -> dict[str, Any]:
    """Rank 0's RNG states where ``save_checkpoint`` has them; the other ranks' under ``ranks``."""
    rank = _rank()
    return _rng_state() if rank == 0 else {"ranks": {str(rank): _rng_state()}}


def save_sharded(folder: PathLike, *, model: nn.Module, optimizer: Any = None,
                 scheduler: Any = None, scaler: Any = None, epoch: int, **extra: Any) -> Path:
    """Write a resumable DCP checkpoint folder from every rank (call it on all of them).

    Each rank writes its shards into a temporary folder next to ``folder``; after all are done
    rank 0 renames it onto ``folder``, so a crash mid-save leaves the previous checkpoint intact.
    Extras (history, config...) must load with ``weights_only=True``, as for ``save_checkpoint``.
    A tensor that every rank holds whole (a BatchNorm buffer; every weight under DDP) is written
    once, rank 0's copy, like ``save_checkpoint`` on rank 0; buffers that differ between ranks
    (FSDP does not synchronise them) come back as rank 0's on every rank.

    >>> save_sharded("runs/dcp/last", model=model, optimizer=optimizer, epoch=2, best_acc=0.9)
    PosixPath('runs/dcp/last')
    """
    folder = Path(folder)
    _check_save_args(folder, epoch, extra)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(folder, _("this is a file; a DCP checkpoint is a folder"),
                              _("Give a folder name without a suffix, e.g. runs/dcp/last."))
    small: dict[str, Any] = {"format": FORMAT, "epoch": epoch}
    for name, part in (("scheduler", scheduler), ("scaler", scaler)):
        if part is not None:
            small[name] = part.state_dict()
    small.update(extra)
    _check_storable(folder, small)
    error, tmp = None, _temp_name(folder, "tmp")
    if _rank() == 0:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_sharded_temps(folder)
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError as exc:
            error = _("cannot write next to it ({type}: {message})").format(
                type=type(exc).__name__, message=_first_line(exc))
    tmp, error = _from_rank0((tmp, error))
    if error is None:
        state = {**small, **_state(model, optimizer), "rng": _rank_rng()}
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_SINGLE_PROCESS)
                dcp.save(state, checkpoint_id=tmp, planner=_lowest_rank_planner())
        except Exception as exc:  # DCP gathers every rank's failure and raises it on all ranks
            error = _("the save failed ({type}: {message})").format(
                type=type(exc).__name__, message=_first_line(exc))
        if _rank() == 0:
            try:
                if error is None:
                    _swap_in(tmp, folder)
            except OSError as exc:
                error = _("cannot rename the finished save into place ({message})").format(
                    message=_first_line(exc))
            finally:
                if error is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
        error = _from_rank0(error)
    if error is not None:
        raise CheckpointError(folder, error, _("The previous checkpoint in this place, if any, is "
                                               "intact. Check free space and permissions."))
    return folder


def _placeholders(metadata: Metadata, skip: tuple[str, ...]) -> dict[str, Any]:
    """A nested dict with a slot for every saved entry outside ``skip`` (epoch, rng, extras)."""
    result: dict[str, Any] = {}
    for key, path in (metadata.planner_data or {}).items():
        if path[0] in skip or key not in metadata.state_dict_metadata:
            continue
        info = metadata.state_dict_metadata[key]
        slot: Any = result
        for part, following in zip(path[:-1], path[1:], strict=True):
            if isinstance(slot, list):
                slot.extend([None] * (part + 1 - len(slot)))
                slot[part] = slot[part] or ([] if isinstance(following, int) else {})
                slot = slot[part]
            else:
                slot = slot.setdefault(part, [] if isinstance(following, int) else {})
        value = (torch.empty(info.size, dtype=info.properties.dtype)
                 if isinstance(info, TensorStorageMetadata) else None)
        if isinstance(slot, list):
            slot.extend([None] * (path[-1] + 1 - len(slot)))
        slot[path[-1]] = value
    return result


class _SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, but a non-tensor entry must load with ``weights_only=True`` first."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        data = value.read()
        torch.load(io.BytesIO(data), weights_only=True)  # raises on pickled code
        super().load_bytes(read_item, io.BytesIO(data))


def _dcp_load(folder: Path, state: dict[str, Any]) -> None:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SINGLE_PROCESS)
            dcp.load(state, checkpoint_id=folder, planner=_SafeLoadPlanner())
    except Exception as exc:
        raise CheckpointError(folder, _("DCP could not read it ({type}: {message})").format(
                                          type=type(exc).__name__, message=_first_line(exc)),
                              DAMAGED_ADVICE) from None


def load_sharded(folder: PathLike, *, model: nn.Module, optimizer: Any = None,
                 scheduler: Any = None, scaler: Any = None, restore_rng: bool = True,
                 strict: bool = True) -> dict[str, Any]:
    """Restore what ``save_sharded`` wrote into the objects given, on every rank or in one process
    (no process group needed); return ``epoch``, ``start_epoch`` and the extras.

    Everything is read and checked before anything is applied (keys, shapes, the scheduler),
    so a refused folder leaves the objects as they were. With as many ranks as when saving each
    rank gets its own RNG states back (bit-exact resume); with another number, rank 0's.

    >>> load_sharded("runs/dcp/last", model=model, optimizer=optimizer)["start_epoch"]
    3
    """
    folder = _resolve(folder)
    metadata = read_dcp_metadata(folder)
    target = _clone(_state(model, optimizer))
    check_keys(folder, target, strict=strict)
    small = _placeholders(metadata, _TENSOR_PARTS)
    if "format" not in small or "epoch" not in small:
        raise CheckpointError(folder, _("it holds no epoch/format entry, so save_sharded did not write "
                                        "it"), _("Load weights only with load_sharded_weights."))
    for name, part in (("scheduler", scheduler), ("scaler", scaler)):
        if part is not None and name not in small:
            raise CheckpointError(folder, _("it holds no {name} state").format(name=name),
                                  _("It was saved without {name}=...; leave out {name}= here.").format(
                                      name=name))
    loaded = {**small, **target}
    _dcp_load(folder, loaded)  # DCP replaces the top-level values of the dict it is given
    small, target = ({k: loaded[k] for k in part} for part in (small, target))
    epoch, rng = small["epoch"], small.get("rng") if restore_rng else None
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise CheckpointError(folder, _("its epoch is {epoch!r}, not a whole number").format(epoch=epoch),
                              DAMAGED_ADVICE)
    if rng is not None:
        rng = dict(rng.get("ranks", {}).get(str(_rank()), rng))
        rng.pop("ranks", None)
        _check_rng(rng, folder)
    before = [(part, part.state_dict()) for part in (scheduler, scaler) if part is not None]
    try:
        for name, part in (("scheduler", scheduler), ("scaler", scaler)):
            if part is not None:
                part.load_state_dict(small[name])
        options = StateDictOptions(strict=True)  # keys and shapes were checked: this fits
        if optimizer is None:
            set_model_state_dict(model, target["model"], options=options)
        else:
            set_state_dict(model, optimizer, model_state_dict=target["model"],
                           optim_state_dict=target["optimizer"], options=options)
    except Exception as exc:
        for part, state in before:
            part.load_state_dict(state)
        raise CheckpointError(folder, _("its state does not fit ({type}: {first_line})").format(
                                          type=type(exc).__name__, first_line=_first_line(exc)),
                              _("Build the model, optimizer and scheduler as when saving.")) from None
    if rng is not None:
        _restore_rng(rng)
    extras = {k: v for k, v in small.items() if k not in RESERVED_KEYS}
    return {"epoch": epoch, "start_epoch": epoch + 1, **extras}


def read_sharded_extras(folder: PathLike) -> dict[str, Any]:
    """The epoch and the extras (class names, config, history...) of a ``save_sharded`` folder,
    read without a model (to build one for deployment); tensors and RNG states are left out.

    >>> read_sharded_extras("runs/dcp/best")["class_names"][:2]
    ['0', '1']
    """
    folder = _resolve(folder)
    small = _placeholders(read_dcp_metadata(folder), (*_TENSOR_PARTS, "rng", "scheduler",
                                                      "scaler"))
    _dcp_load(folder, small)
    return {k: v for k, v in small.items() if k not in RESERVED_KEYS or k == "epoch"}


def load_sharded_weights(model: nn.Module, folder: PathLike, *,
                         strict: bool = True) -> IncompatibleKeys:
    """Load only the model's weights from a DCP folder (any DCP checkpoint with ``model.*`` keys),
    e.g. to deploy in one process; keys and shapes are checked first. ``strict=False`` allows
    checkpoint keys that the model lacks; every key of the model must be there.

    >>> load_sharded_weights(model, "runs/dcp/best")
    IncompatibleKeys(missing_keys=[], unexpected_keys=[])
    """
    folder = _resolve(folder)
    target = {"model": _clone(get_model_state_dict(model))}
    check_keys(folder, target, strict=strict)
    _dcp_load(folder, target)
    report = set_model_state_dict(model, target["model"], options=StateDictOptions(strict=strict))
    return IncompatibleKeys(list(report.missing_keys), list(report.unexpected_keys))


__all__ = ["load_sharded", "load_sharded_weights", "read_sharded_extras", "save_sharded"]
