"""Real shards on CPU: a TinyResNet sharded with FSDP2 (``fully_shard``) over gloo, saved as DCP.

    torchrun --standalone --nproc-per-node=2 -m helpers.sharding_demo --out runs/sharded

Each rank holds only its slice of every parameter (a ``DTensor`` sharded on dim 0), trains a few
epochs on the digits and writes ``OUT/last`` with ``save_sharded`` after each epoch: every rank its
own ``__R_0.distcp``, rank 0 the ``.metadata``. The ``epoch`` saved there is the 0-based index of
the epoch just finished, as ``fit`` counts (``load_sharded`` returns ``start_epoch`` = epochs
done). Rank 0 also writes ``OUT/full_weights.pt`` (the gathered full weights, to compare with) and
``OUT/report.json`` (what each rank held and wrote).
``--check-resume`` then rebuilds the model, loads ``last`` and trains once more on both copies:
they must agree bit for bit.

>>> run_torchrun("helpers.sharding_demo", ["--out", "runs/sharded"], nproc_per_node=2).ok
True

FSDP2 on CPU (gloo) runs on torch 2.11, 2.14 and 2.15 (measured); torch 2.6's FSDP2 calls
``Stream.record_event``, which its CPU stream lacks, so on torch < 2.7 the demo stops with a
message instead of a traceback from every rank.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from helpers.checkpoint.sharded import load_sharded, save_sharded
from helpers.i18n import _

FSDP2_CPU_MIN_TORCH = (2, 7)


def fsdp2_cpu_problem() -> str | None:
    """Why FSDP2 cannot run on CPU with this torch, or None. ``fsdp2_cpu_problem() is None``"""
    major, minor = (int(part) for part in torch.__version__.split(".")[:2])
    if (major, minor) < FSDP2_CPU_MIN_TORCH:
        return _("FSDP2 on CPU needs torch >= 2.7 (this is torch {version}, whose FSDP2 needs a CUDA "
                 "stream); upgrade torch, or run on GPUs").format(version=torch.__version__)
    return None


def shard_model(model: nn.Module, mesh: Any) -> nn.Module:
    """FSDP2: every block, then the whole model, sharded over ``mesh`` (parameters become DTensors).

    >>> shard_model(TinyResNet(10), init_device_mesh("cpu", (2,))).fc.weight.placements
    (Shard(dim=0),)
    """
    from torch.distributed.fsdp import fully_shard

    for block in getattr(model, "blocks", []):
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def digest(model: nn.Module) -> str:
    """SHA-256 of this rank's local parameter and buffer bytes (its shards)."""
    hasher = hashlib.sha256()
    for tensor in model.state_dict().values():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        hasher.update(local.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def sync_buffers(model: nn.Module) -> bool:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank; True if they had differed.

    FSDP shards parameters only: each rank updates its own BatchNorm statistics from its own
    batches, and a DCP folder can hold one copy of each.
    """
    differed = False
    for buffer in model.buffers():
        mine = buffer.detach().clone()
        dist.broadcast(buffer.data, src=0)
        differed |= not torch.equal(mine, buffer)
    flag = torch.tensor([int(differed)])
    dist.all_reduce(flag)
    return bool(flag.item())


def _build(args: argparse.Namespace, mesh: Any, steps_per_epoch: int) -> tuple[Any, ...]:
    from helpers.models import TinyResNet

    torch.manual_seed(args.seed)  # the same initial weights on every rank before sharding
    model = shard_model(TinyResNet(10, width=args.width, depth=args.depth, dropout=0.1), mesh)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=1e-2, epochs=args.epochs + 1, steps_per_epoch=steps_per_epoch)
    return model, optimizer, scheduler


def _epoch(model: nn.Module, optimizer: Any, scheduler: Any, loader: Any, sampler: Any,
           epoch: int) -> float:
    model.train()
    sampler.set_epoch(epoch)
    total, count = 0.0, 0
    for X, y in loader:
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # FSDP2 reduce-scatters the gradients: each rank keeps its slice
        optimizer.step()
        scheduler.step()
        total, count = total + float(loss.detach()), count + 1
    return total / max(count, 1)


def main(argv: list[str] | None = None) -> int:
    problem = fsdp2_cpu_problem()
    if problem:
        raise SystemExit(_("error: {message}").format(message=problem))
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    from helpers.data import load_digits, make_loader
    from helpers.distributed import cleanup_distributed, setup_distributed

    parser = argparse.ArgumentParser(prog="python -m helpers.sharding_demo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-resume", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # the processes share the cores; one thread is also reproducible
    ctx = setup_distributed("cpu")
    mesh = init_device_mesh("cpu", (ctx.world_size,))
    data = load_digits(10, seed=args.seed)
    sampler = DistributedSampler(data.train, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=args.seed)
    loader = make_loader(data.train, 64, sampler=sampler)
    model, optimizer, scheduler = _build(args, mesh, len(loader))
    last, history = args.out / "last", {"train_loss": []}
    save_s = []
    for epoch in range(args.epochs):
        history["train_loss"].append(_epoch(model, optimizer, scheduler, loader, sampler, epoch))
        buffers_differed = sync_buffers(model)
        start = time.perf_counter()
        save_sharded(last, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                     history=history)
        save_s.append(time.perf_counter() - start)
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))
    full = {k: v.clone() for k, v in full.items()}  # on a CPU, buffers come back as the live ones
    weight = model.fc.weight
    rank_report: dict[str, Any] = {
        "rank": ctx.rank, "fc_weight_global": list(weight.shape),
        "fc_weight_local": list(weight.to_local().shape), "placements": str(weight.placements),
        "file": f"__{ctx.rank}_0.distcp", "buffers_differed": buffers_differed,
        "file_bytes": (last / f"__{ctx.rank}_0.distcp").stat().st_size, "save_s": save_s}
    if args.check_resume:
        # Go on one epoch, then do the same from `last` in fresh objects: bit for bit equal?
        _epoch(model, optimizer, scheduler, loader, sampler, args.epochs)
        expected = digest(model)
        torch.manual_seed(12345)  # disturb the RNG: load_sharded must put it back
        model2, optimizer2, scheduler2 = _build(args, mesh, len(loader))
        start = time.perf_counter()
        info = load_sharded(last, model=model2, optimizer=optimizer2, scheduler=scheduler2)
        rank_report["load_s"] = time.perf_counter() - start
        _epoch(model2, optimizer2, scheduler2, loader, sampler, info["start_epoch"])
        rank_report.update(resumed_equal=digest(model2) == expected, start_epoch=info["start_epoch"])
    reports: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(reports, rank_report)
    if ctx.is_main:
        torch.save(full, args.out / "full_weights.pt")
        summary = {"world_size": ctx.world_size, "torch": torch.__version__, "ranks": reports,
                   "pid": os.getpid()}
        (args.out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary))
    cleanup_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
