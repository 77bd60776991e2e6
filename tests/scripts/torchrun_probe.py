"""Run under torchrun: join the group with setup_distributed, save_on_main, report as JSON.

    python -m torch.distributed.run --standalone --nproc-per-node=2 \
        tests/scripts/torchrun_probe.py OUT

Used by tests/test_distributed.py.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from helpers.distributed import (
    cleanup_distributed,
    is_main_process,
    save_on_main,
    setup_distributed,
)


def main(out: Path) -> None:
    ctx = setup_distributed("auto")
    torch.manual_seed(ctx.rank)  # different init per rank: DDP must broadcast rank 0's weights
    model = DDP(nn.Linear(3, 2).to(ctx.device))
    wrote = save_on_main(out / "weights.pt", model=model)
    exists_after_barrier = (out / "weights.pt").exists()
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, model.module.weight.detach().cpu().tolist())
    report = {"rank": ctx.rank, "local_rank": ctx.local_rank, "world_size": ctx.world_size,
              "backend": ctx.backend, "device": str(ctx.device), "is_main": is_main_process(),
              "ctx_is_main": ctx.is_main, "wrote": wrote,
              "exists_after_barrier": exists_after_barrier,
              "weights_equal_across_ranks": all(w == gathered[0] for w in gathered)}
    cleanup_distributed()
    report["initialized_after_cleanup"] = dist.is_initialized()
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
