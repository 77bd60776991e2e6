"""Saving and loading weights and resumable training checkpoints, safely and atomically.

>>> save_checkpoint("runs/last.pt", model=model, optimizer=optimizer, epoch=3, best_acc=0.97)
>>> load_checkpoint("runs/last.pt", model=model, optimizer=optimizer)["start_epoch"]
4

Everything here loads with ``weights_only=True`` (no pickled code runs), strips the ``module.`` and
``_orig_mod.`` prefixes that DataParallel, DistributedDataParallel and ``torch.compile`` add, and
writes through a temporary file that is renamed onto the target, so a crash mid-save leaves the
previous file intact. The temporary file (``.<name>.tmp-<pid>-<thread>-<random>``, new for every
save) is created so that it can never be an existing file or a link; a crash can leave it behind,
and the next save or load in that folder removes the ones whose process no longer runs.

One module per concern:

- ``errors``: ``CheckpointError``, the shared constants and advice texts
- ``prefixes``: ``strip_prefixes``, ``unwrap_model``
- ``atomic``: atomic writes, stale temporary files, the folder lock of a training run
- ``storable``: what may go into a file (what ``weights_only=True`` loads)
- ``archive``: zip archives checked before torch reads them (inflation bound, ``.pt2`` pickles)
- ``reading``: format detection and safe loading of every file kind
- ``validate``: a file's tensors, epoch, optimizer and scheduler checked before anything is applied
- ``weights``: ``save_weights``, ``load_weights``, ``load_whole_model``
- ``training``: ``save_checkpoint``, ``load_checkpoint`` (with RNG states)
- ``callbacks``: ``BestAndLast``, the "last.pt every epoch, best.pt on improvement" callback,
  and ``ShardedBestAndLast``, the same with DCP folders written by every rank
- ``summary``: ``checkpoint_summary``, ``state_dicts_equal``, ``outputs_equal``
- ``sharded``: ``save_sharded``, ``load_sharded``, ``load_sharded_weights``,
  ``read_sharded_extras``: a DCP (``torch.distributed.checkpoint``) folder written by every rank
- ``dcp_files``: ``is_dcp_folder``, ``check_keys``, ``read_dcp_metadata``, ``shard_layout``,
  ``remove_stale_sharded_temps``: a DCP folder's index read safely, its keys checked
- ``conversion``: ``dcp_to_file``, ``file_to_dcp``: a DCP folder to one file and back

The last three import ``torch.distributed.checkpoint`` (about 3 s), so they load on first use:
``from helpers.checkpoint import save_sharded`` imports them, ``import helpers.checkpoint`` does not.
"""

from __future__ import annotations

from helpers.checkpoint.atomic import FolderLock, _atomic_write, remove_stale_temps, temp_path_for
from helpers.checkpoint.callbacks import BestAndLast, ShardedBestAndLast
from helpers.checkpoint.errors import (
    FORMAT,
    RESERVED_KEYS,
    WEIGHT_KEYS,
    WRAPPER_PREFIXES,
    CheckpointError,
    IncompatibleKeys,
    PathLike,
)
from helpers.checkpoint.prefixes import strip_prefixes, unwrap_model
from helpers.checkpoint.reading import _read
from helpers.checkpoint.summary import checkpoint_summary, outputs_equal, state_dicts_equal
from helpers.checkpoint.training import load_checkpoint, save_checkpoint
from helpers.checkpoint.weights import load_weights, load_whole_model, save_weights
from helpers.i18n import _

__all__ = ["FORMAT", "RESERVED_KEYS", "WEIGHT_KEYS", "WRAPPER_PREFIXES", "BestAndLast",
           "ShardedBestAndLast",
           "CheckpointError", "FolderLock", "IncompatibleKeys", "PathLike", "_atomic_write", "_read",
           "checkpoint_summary", "remove_stale_temps",
           "load_checkpoint", "load_weights", "load_whole_model", "outputs_equal",
           "save_checkpoint", "save_weights", "state_dicts_equal", "strip_prefixes",
           "temp_path_for", "unwrap_model",
           # lazy: torch.distributed.checkpoint is imported on first use (see __getattr__)
           "check_keys", "dcp_to_file", "file_to_dcp", "is_dcp_folder", "load_sharded",
           "load_sharded_weights", "read_dcp_metadata", "read_sharded_extras",
           "remove_stale_sharded_temps", "save_sharded", "shard_layout"]

_LAZY = {
    **dict.fromkeys(("save_sharded", "load_sharded", "load_sharded_weights",
                     "read_sharded_extras"), "sharded"),
    **dict.fromkeys(("dcp_to_file", "file_to_dcp"), "conversion"),
    **dict.fromkeys(("check_keys", "is_dcp_folder", "read_dcp_metadata",
                     "remove_stale_sharded_temps", "shard_layout"), "dcp_files"),
}


def __getattr__(name: str) -> object:
    """The DCP API, imported on first use (``torch.distributed.checkpoint`` costs seconds)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(_("module {name!r} has no attribute {name2!r}").format(
                                 name=__name__, name2=name))
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
