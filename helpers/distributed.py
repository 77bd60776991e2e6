"""Multi-process training with ``torch.distributed``: torchrun setup and a self-contained DDP demo.

>>> result = run_ddp_demo(2, checkpoint_dir="runs/ddp")  # two CPU processes talking over gloo
>>> result["wrapped_keys"][0], result["weights_keys"][0]
('module.stem.0.weight', 'stem.0.weight')

Under ``torchrun`` a script calls ``setup_distributed()`` first and ``cleanup_distributed()`` last;
only rank 0 writes files (``save_on_main``). The demo's workers are module-level functions, so
``spawn`` can start them from a Jupyter notebook cell too.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from helpers.checkpoint import PathLike, save_checkpoint, save_weights
from helpers.i18n import _

# The demo model: small enough that two CPU processes train it in a second or two.
DEMO_MODEL = {"num_classes": 10, "width": 16, "depth": 1}
DEMO_BATCH_SIZE = 32
WRAPPED_FILE, WEIGHTS_FILE = "ddp_wrapped_state_dict.pt", "ddp_weights.pt"


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a run: its ranks, the world size, its device and backend."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str | None  # None: a plain single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it).

    >>> 1024 <= free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_main_process() -> bool:
    """True on rank 0, and in a plain process that is not part of a distributed run.

    >>> is_main_process()
    True
    """
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(_("environment variable {name} must be an integer, got {value!r}").format(
                             name=name, value=value)) from None


def setup_distributed(device: str | torch.device = "auto", *,
                      backend: str | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*.

    Without those variables (plain ``python script.py``) nothing is initialised and the context
    describes one process on ``device`` (``auto`` picks CUDA, MPS or CPU). Under torchrun CUDA
    runs use NCCL with one GPU per process (``cuda:LOCAL_RANK``), CPU runs use gloo.

    >>> ctx = setup_distributed("cpu"); ctx.world_size, ctx.is_main
    (1, True)
    """
    from helpers.settings import parse_device

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext(0, 0, 1, parse_device(device, source="device"), None)
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(_("RANK and WORLD_SIZE are set but {missing} is not; start the script with "
                             "torchrun, which sets all of them").format(missing=', '.join(missing)))
    rank, world_size = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else rank
    wanted = str(device).lower()
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(_("LOCAL_RANK={local_rank} needs cuda:{local_rank}, but {device_count} "
                                 "CUDA device(s) are visible; start at most that many processes per "
                                 "node, or use --device cpu").format(
                                   local_rank=local_rank, device_count=torch.cuda.device_count()))
        torch.cuda.set_device(local_rank)
        chosen, backend = torch.device("cuda", local_rank), backend or "nccl"
    elif wanted == "cpu":
        chosen, backend = torch.device("cpu"), backend or "gloo"
    else:
        raise ValueError(_("distributed runs need cuda or cpu, got device {device!r}").format(
                             device=str(device)))
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                                device_id=chosen if backend == "nccl" else None)
    return DistributedContext(rank, local_rank, world_size, chosen, backend)


def cleanup_distributed() -> None:
    """Leave the process group (if this process joined one); safe to call twice."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here; does nothing outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def save_on_main(path: PathLike, *, model: nn.Module, **checkpoint: Any) -> bool:
    """Rank 0 saves, then every rank waits at a barrier; returns whether this process wrote.

    With ``epoch=...`` (and optimizer, scheduler, extras) it writes ``save_checkpoint``, without
    it ``save_weights``. The barrier keeps other ranks from reading the file before it exists.

    >>> save_on_main("runs/ddp/last.pt", model=ddp_model, optimizer=optimizer, epoch=3)
    True
    """
    wrote = False
    try:
        if is_main_process():
            if "epoch" in checkpoint:
                save_checkpoint(path, model=model, **checkpoint)
            elif checkpoint:
                raise TypeError(_("save_on_main without epoch= writes weights only; got {checkpoint}").format(
                                    checkpoint=sorted(checkpoint)))
            else:
                save_weights(model, path)
            wrote = True
    finally:
        barrier()
    return wrote


def _choose_backend(backend: str | None, world_size: int) -> str:
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(_("world_size must be a positive integer, got {world_size!r}").format(
                             world_size=world_size))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if backend is None:
        backend = "nccl" if 0 < world_size <= gpus else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(_("backend must be 'gloo' (CPU) or 'nccl' (CUDA), got {backend!r}").format(
                             backend=backend))
    if backend == "nccl" and world_size > gpus:
        raise ValueError(_("NCCL needs one GPU per process: world_size={world_size}, but {gpus} CUDA "
                           "device(s) are visible; use backend='gloo' or a smaller world_size").format(
                             world_size=world_size, gpus=gpus))
    return backend


def _digest(model: nn.Module) -> str:
    hasher = hashlib.sha256()
    for param in model.parameters():
        hasher.update(param.detach().cpu().numpy().tobytes())
    return hasher.hexdigest()


def _ddp_worker(rank: int, world_size: int, backend: str, port: int, checkpoint_dir: str,
                steps: int, seed: int, queue: Any) -> None:
    """One rank of ``run_ddp_demo`` (module level, so ``spawn`` can import it)."""
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP
    from torch.utils.data import DistributedSampler

    from helpers.data import load_digits, make_loader
    from helpers.models import TinyResNet
    from helpers.seeding import seed_everything

    torch.set_num_threads(1)  # N processes share the cores
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=timedelta(seconds=120),
                            device_id=device if backend == "nccl" else None)
    try:
        seed_everything(seed, deterministic=False)  # same init everywhere; skips a 1 s import
        data = load_digits(DEMO_MODEL["num_classes"], device=device, seed=seed)
        model = DDP(TinyResNet(**DEMO_MODEL).to(device),
                    device_ids=[rank] if device.type == "cuda" else None)
        sampler = DistributedSampler(data.train, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=seed)
        loader = make_loader(data.train, DEMO_BATCH_SIZE, sampler=sampler)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sampler.set_epoch(0)
        shard = [int(i) for i in sampler]
        done, epoch, loss = 0, 0, torch.zeros(())
        while done < steps:
            sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
            for X, y in loader:
                loss = F.cross_entropy(model(X), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # DDP averages the gradients of all ranks here
                optimizer.step()
                done += 1
                if done == steps:
                    break
            epoch += 1
        directory = Path(checkpoint_dir)
        if rank == 0:
            torch.save(model.state_dict(), directory / WRAPPED_FILE)  # the usual mistake, for show
        save_on_main(directory / WEIGHTS_FILE, model=model)  # unwrapped; barrier inside
        queue.put({"rank": rank, "pid": os.getpid(), "device": str(device), "shard_epoch0": shard,
                   "loss": float(loss.detach()), "param_digest": _digest(model)})
    finally:
        dist.destroy_process_group()


def run_ddp_demo(world_size: int = 2, *, backend: str | None = None, checkpoint_dir: PathLike,
                 steps: int = 5, seed: int = 0, timeout_s: float = 300.0) -> dict[str, Any]:
    """Train ``TinyResNet`` with DistributedDataParallel in ``world_size`` processes; save twice.

    Each rank trains on its own shard of the digits (DistributedSampler). Rank 0 then writes
    ``ddp_wrapped_state_dict.pt`` (``model.state_dict()`` of the DDP wrapper: ``module.`` keys)
    and ``ddp_weights.pt`` (``save_weights``: plain keys). Backend: NCCL when there is a GPU per
    process, else gloo on CPU. Every worker is joined before this returns (killed after
    ``timeout_s``). Parameters end up equal on all ranks (``in_sync``): DDP averages gradients.
    BatchNorm running statistics are buffers, which DDP does not average; with the default
    ``broadcast_buffers=True`` it copies rank 0's buffers to every rank at the start of each
    forward pass, so all ranks train with rank 0's statistics, each then updates them from its own
    batch, and after the last step they differ by that one update. The files hold rank 0's.
    (``nn.SyncBatchNorm.convert_sync_batchnorm`` computes the statistics over all ranks' batches.)

    >>> run_ddp_demo(2, checkpoint_dir="runs/ddp")["in_sync"]
    True
    """
    import torch.multiprocessing as mp

    backend = _choose_backend(backend, world_size)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(_("steps must be a positive integer, got {steps!r}").format(steps=steps))
    directory = Path(checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    queue = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(_ddp_worker, args=(world_size, backend, free_port(),
                                                    str(directory), steps, seed, queue),
                                 nprocs=world_size, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=0.5):  # raises with the worker's traceback if one fails
            if time.monotonic() > deadline:
                raise TimeoutError(_("the {world_size} DDP workers did not finish in {timeout_s} s; "
                                     "they were stopped").format(
                                       world_size=world_size, timeout_s=timeout_s))
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    ranks = sorted((queue.get() for _ in range(world_size)), key=lambda r: r["rank"])
    queue.close()
    wrapped, weights = directory / WRAPPED_FILE, directory / WEIGHTS_FILE
    first = lambda p: list(torch.load(p, map_location="cpu", weights_only=True))[:3]
    return {"world_size": world_size, "backend": backend, "steps": steps, "seed": seed,
            "model_kwargs": dict(DEMO_MODEL), "wrapped_path": wrapped, "weights_path": weights,
            "wrapped_keys": first(wrapped), "weights_keys": first(weights),
            "in_sync": len({r["param_digest"] for r in ranks}) == 1,
            "pids": [r["pid"] for r in ranks], "ranks": ranks}


__all__ = ["DEMO_MODEL", "DistributedContext", "barrier", "cleanup_distributed", "free_port",
           "is_main_process", "run_ddp_demo", "save_on_main", "setup_distributed"]
