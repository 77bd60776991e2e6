"""Save a DCP checkpoint, then die by SIGKILL in the middle of the next save.

    torchrun --standalone --nproc-per-node=2 tests/scripts/dcp_crash.py OUT --die-in write
    python tests/scripts/dcp_crash.py OUT --die-in swap

``OUT/last`` is written once (epoch 0) with ``save_sharded``. Then the epoch-1 save is armed:
``write`` kills rank 0 right after it wrote its shard (no ``.metadata`` yet), ``swap``
kills rank 0 between the two renames that put the new folder in place. Used by tests/test_dcp.py.
"""

import argparse
import os
import signal
from pathlib import Path

import torch
import torch.distributed.checkpoint.filesystem as dcp_fs

from helpers.checkpoint import dcp_files
from helpers.checkpoint.sharded import save_sharded
from helpers.distributed import cleanup_distributed, setup_distributed
from helpers.models import TinyResNet


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--die-in", choices=["write", "swap"], required=True)
    args = parser.parse_args()
    ctx = setup_distributed("cpu")
    torch.manual_seed(0)
    model = TinyResNet(10, width=8, depth=1)
    if ctx.world_size > 1:
        from torch.distributed.device_mesh import init_device_mesh

        from helpers.sharding_demo import shard_model

        model = shard_model(model, init_device_mesh("cpu", (ctx.world_size,)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    last = args.out / "last"
    save_sharded(last, model=model, optimizer=optimizer, epoch=0, note="first")
    if args.die_in == "write" and ctx.rank == 0:  # rank 0 owns the temp folder
        write_data = dcp_fs.FileSystemWriter.write_data

        def write_then_die(self, plan, planner):
            future = write_data(self, plan, planner)
            future.wait()
            print(f"rank {ctx.rank} wrote its shard and dies", flush=True)
            _die()

        dcp_fs.FileSystemWriter.write_data = write_then_die
    if args.die_in == "swap" and ctx.rank == 0:
        replace = os.replace

        def replace_once_then_die(src, dst):
            replace(src, dst)
            if Path(dst).name.startswith(f".{last.name}.old-"):
                print("rank 0 moved the previous folder aside and dies", flush=True)
                _die()

        dcp_files.os.replace = replace_once_then_die  # type: ignore[attr-defined]
    save_sharded(last, model=model, optimizer=optimizer, epoch=1, note="second")
    cleanup_distributed()
    raise SystemExit("the save should have died")


if __name__ == "__main__":
    main()
