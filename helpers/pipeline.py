"""The course pipeline as a script: train a TinyResNet on the digits, checkpointing every epoch.

Single process::

    python -m helpers.pipeline --num-classes 10 --epochs 8 --checkpoint-dir runs/pipeline

Several processes (one per GPU, or CPU processes on gloo), on one or many machines::

    torchrun --standalone --nproc-per-node=2 -m helpers.pipeline --checkpoint-dir runs/ddp

Each epoch rank 0 writes ``last.pt`` (and ``best.pt`` when validation accuracy improves) with
``helpers.checkpoint.BestAndLast``: unprefixed weights, optimizer, scheduler, epoch, RNG states.
With ``--checkpoint-format dcp`` every rank writes its part of the folders ``last`` and ``best``
(``save_sharded``). ``--resume`` continues from ``last.pt`` (or ``last``). Rank 0 locks the
folder, so a second run on the same ``--checkpoint-dir`` is refused instead of overwriting this
one's files. Ctrl-C or SIGTERM stops the run between two atomic saves, so the last complete
checkpoint stays intact.

Epochs: what the script prints counts from 1 ("resumed from runs/x/last.pt: 3 epochs done, next
epoch 4 of 6"). Inside, epochs are ``fit``'s 0-based indices: a checkpoint's ``epoch`` is the index
of the last finished epoch, and ``start_epoch`` (``epoch + 1``) is both the index of the next one
and the number of epochs done.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

from helpers.cli import one_line, path_problem, started_cleanly
from helpers.i18n import _, ngettext

with started_cleanly(__name__):  # Ctrl-C while torch loads: one line, not 50 lines of frames
    import torch
    from torch import nn
    from torch.utils.data import DistributedSampler

    from helpers.checkpoint import (
        BestAndLast,
        CheckpointError,
        FolderLock,
        ShardedBestAndLast,
        load_checkpoint,
        unwrap_model,
    )
    from helpers.checkpoint.atomic import _atomic_write
    from helpers.data import load_digits, make_loader
    from helpers.distributed import cleanup_distributed, is_main_process, setup_distributed
    from helpers.models import TinyResNet
    from helpers.report import measured, tolerate_narrow_console
    from helpers.seeding import seed_everything
    from helpers.settings import SettingsError, parse_device, parse_num_classes
    from helpers.training import History, evaluate, fit, one_cycle

LAST, BEST = "last.pt", "best.pt"
# --checkpoint-format: file (rank 0 writes one torch.save file) or dcp (every rank writes its part
# of a torch.distributed.checkpoint folder). The names of last/best in each, chosen here only.
NAMES = {"file": (LAST, BEST), "dcp": ("last", "best")}
# Sane upper bounds (the deploy sidecar's limits for the architecture): a typo such as --width
# 1000000 would allocate gigabytes, --lr 1e308 overflows to inf in the first step.
MAX_EPOCHS, MAX_LR, MAX_WIDTH, MAX_DEPTH = 10_000, 10.0, 1024, 64


class ResumeRefused(Exception):
    """--resume cannot continue this run (no file, another plan); ``main`` prints one line."""


def _positive(kind: type, high: float) -> Any:
    """An argparse type: a positive ``kind`` up to ``high`` (ASCII digits; no nan, no inf)."""
    def parse(text: str):
        name = kind.__name__
        try:
            if not text.strip().isascii():
                raise ValueError(text)
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(_("expected a positive {kind}, got {text!r}").format(
                kind=name, text=text)) from None
        if not (value > 0 and math.isfinite(value)):  # also refuses nan and inf
            raise argparse.ArgumentTypeError(
                (_("expected a positive finite {kind}, got {text!r}") if kind is float else
                 _("expected a positive {kind}, got {text!r}")).format(kind=name, text=text))
        if value > high:
            raise argparse.ArgumentTypeError(_("expected a positive {kind} of at most {high:g}, got "
                                               "{text!r}").format(kind=name, high=high, text=text))
        return value

    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(_("expected a whole number, got {text!r}").format(
            text=text)) from None
    if not text.strip().isascii() or not 0 <= value < 2**32:  # what NumPy's seed accepts
        raise argparse.ArgumentTypeError(_("expected a seed from 0 to 2**32 - 1, got {text!r}").format(
            text=text))
    return value


def _done(epochs: int) -> str:
    return ngettext("{count} epoch done", "{count} epochs done", epochs).format(count=epochs)


def resumed_at(start_epoch: int, epochs: int) -> str:
    """Where a resumed run stands, counted from 1; ``start_epoch`` is fit's 0-based index of the
    next epoch, which is also the number of epochs done.

    >>> resumed_at(3, 6)
    '3 epochs done, next epoch 4 of 6'
    """
    if start_epoch >= epochs:
        return _("{done} of {epochs}, nothing left to train").format(done=_done(start_epoch), epochs=epochs)
    return _("{done}, next epoch {next} of {epochs}").format(done=_done(start_epoch), next=start_epoch + 1,
                                                             epochs=epochs)


def checkpoint_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """Where this run's ``last`` and ``best`` checkpoints go (files or DCP folders)."""
    last, best = NAMES[args.checkpoint_format]
    return args.checkpoint_dir / last, args.checkpoint_dir / best


def _check_folder(folder: Path) -> str | None:
    """Why ``folder`` cannot hold checkpoints (a file, not writable, a name too long), or None."""
    problem = path_problem(folder, "--checkpoint-dir")
    if problem:
        return problem
    if folder.exists() and not folder.is_dir():
        return _("--checkpoint-dir {folder} is a file, not a folder").format(folder=folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return _("--checkpoint-dir {folder}: {existing} is a file, not a folder").format(
            folder=folder, existing=existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        return _("--checkpoint-dir {folder}: no permission to write in {existing}").format(
            folder=folder, existing=existing)
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.pipeline",
        description=_("Train a TinyResNet on the bundled digits with resumable checkpoints. Also runs "
                      "under torchrun (gloo on CPU, NCCL on CUDA)."))
    parser.add_argument("--num-classes", default="10", help=_("digits 0..N-1 to learn, 2..10 (default "
                                                              "10)"))
    parser.add_argument("--device", default="auto", help=_("auto, cpu, cuda, cuda:N or mps (default "
                                                           "auto); under torchrun each rank uses "
                                                           "cuda:LOCAL_RANK or cpu"))
    parser.add_argument("--epochs", type=_positive(int, MAX_EPOCHS), default=8,
                        help=_("total epochs, up to {maximum} (default 8)").format(
                                 maximum=MAX_EPOCHS))
    parser.add_argument("--batch-size", type=_positive(int, 1 << 20), default=64,
                        help=_("batch size per process (default 64)"))
    parser.add_argument("--lr", type=_positive(float, MAX_LR), default=1e-2,
                        help=_("peak learning rate, up to {maximum:g} (default 0.01)").format(maximum=MAX_LR))
    parser.add_argument("--width", type=_positive(int, MAX_WIDTH), default=64,
                        help=_("TinyResNet width, up to {maximum} (default 64)").format(
                                 maximum=MAX_WIDTH))
    parser.add_argument("--depth", type=_positive(int, MAX_DEPTH), default=2,
                        help=_("TinyResNet blocks, up to {maximum} (default 2)").format(
                                 maximum=MAX_DEPTH))
    parser.add_argument("--dropout", type=float, default=0.1, help=_("dropout before the head (default 0.1)"))
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("runs/pipeline"),
                        help=_("where last.pt, best.pt and metrics.json go (default runs/pipeline)"))
    parser.add_argument("--checkpoint-format", choices=sorted(NAMES), default="file",
                        help=_("file: rank 0 writes last.pt/best.pt; dcp: every rank writes its part of "
                               "the folders last/ and best/ (torch.distributed.checkpoint)"))
    parser.add_argument("--resume", action="store_true",
                        help=_("continue from CHECKPOINT_DIR/last.pt (dcp: CHECKPOINT_DIR/last)"))
    parser.add_argument("--seed", type=_seed, default=0, help=_("random seed, 0..2**32-1 (default 0)"))
    parser.add_argument("--quiet", action="store_true", help=_("no progress bar, only the summary"))
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.num_classes = parse_num_classes(args.num_classes, source="--num-classes")
        if args.device != "auto" or "LOCAL_RANK" not in __import__("os").environ:
            args.device = str(parse_device(args.device, source="--device"))
    except SettingsError as exc:
        parser.error(str(exc))
    if not 0 <= args.dropout < 1:
        parser.error(_("--dropout must be in [0, 1), got {dropout}").format(dropout=args.dropout))
    problem = _check_folder(args.checkpoint_dir)
    if problem:
        parser.error(problem)
    return args


def build_model(args: argparse.Namespace) -> nn.Module:
    return TinyResNet(args.num_classes, width=args.width, depth=args.depth, dropout=args.dropout)


class _Stop(KeyboardInterrupt):
    """Raised by the SIGTERM handler so that SIGTERM and Ctrl-C take the same path."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess test
    raise _Stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or resume) and return a summary dict; rank 0 also writes metrics.json."""
    # One run per folder: rank 0 locks it before anything else (another run is refused, named).
    lock = FolderLock(args.checkpoint_dir).acquire() if os.environ.get("RANK", "0") == "0" else None
    try:
        return _run(args)
    finally:
        if lock is not None:
            lock.release()


def _resume_state(state: dict[str, Any], last: Path) -> dict[str, Any]:
    """The pipeline's extras in ``last``, checked; a checkpoint written by anything else is refused."""
    missing = [k for k in ("config", "history", "best_acc") if k not in state]
    if missing or not isinstance(state["config"], dict) or "epochs" not in state["config"]:
        what = ", ".join(missing) if missing else "config['epochs']"
        raise CheckpointError(last, _("it has no {what}, so it was not written by helpers.pipeline").format(
                                        what=what),
                              _("Resume only from a pipeline run's last.pt, or start a new run without "
                                "--resume (another --checkpoint-dir keeps this file)."))
    advice = _("The file was edited or damaged; use best.pt or start a new run without --resume.")
    planned, best = state["config"]["epochs"], state["best_acc"]
    if isinstance(planned, bool) or not isinstance(planned, int) or not 0 < planned <= MAX_EPOCHS:
        raise CheckpointError(last, _("config['epochs'] is {planned!r}, not a whole number from 1 to "
                                      "{maximum}").format(
                                        planned=str(planned)[:40], maximum=MAX_EPOCHS), advice)
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
        raise CheckpointError(last, _("best_acc is {best!r}, not a number").format(best=str(best)[:40]),
                              advice)
    world = state.get("world_size", 1)
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise CheckpointError(last, _("world_size is {world!r}, not a whole number >= 1").format(
                                        world=str(world)[:40]),
                              advice)
    try:
        history = History.from_dict(state["history"])
    except ValueError as exc:
        raise CheckpointError(last, str(exc), advice) from None
    if len(history) > state["start_epoch"]:
        raise CheckpointError(last, _("its history has {count} epochs, but the checkpoint says "
                                      "{done}").format(
                                        count=len(history), done=_done(state['start_epoch'])), advice)
    return {**state, "history": history}


def _run(args: argparse.Namespace) -> dict[str, Any]:
    dist = setup_distributed(args.device)
    device, rank, world = dist.device, dist.rank, dist.world_size
    seed_everything(args.seed)
    data = load_digits(args.num_classes, device=device, seed=args.seed)
    model = build_model(args).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    # One order per epoch from (seed, epoch): each of the `world` processes reads its own shard, and
    # a resumed run sees the same batches. One process is the case num_replicas=1.
    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = make_loader(data.train, args.batch_size, sampler=sampler)
    # One-cycle stepped after every batch, so the last epoch still trains at a useful learning rate.
    scheduler = one_cycle(optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=len(loader))
    planned_steps = scheduler.total_steps
    ckpt_dir = args.checkpoint_dir
    history, start_epoch, best_acc = History(), 0, None
    last, best = checkpoint_paths(args)
    if args.resume:
        if not last.exists():
            other = [f for f, (name, _) in NAMES.items() if (ckpt_dir / name).exists()]
            hint = _(" (it holds {name}: add --checkpoint-format {format})").format(
                name=NAMES[other[0]][0], format=other[0]) if other else ""
            raise ResumeRefused(_("--resume: no checkpoint at {last}{hint}; run once without --resume "
                                  "first").format(last=last, hint=hint))
        if args.checkpoint_format == "dcp":  # every rank reads its part, before DDP wraps the model
            from helpers.checkpoint.sharded import load_sharded

            loaded = load_sharded(last, model=model, optimizer=optimizer, scheduler=scheduler)
        else:
            loaded = load_checkpoint(last, model=model, optimizer=optimizer, scheduler=scheduler,
                                     map_location=device)
        state = _resume_state(loaded, last)
        planned = state["config"]["epochs"]
        if planned != args.epochs:
            raise ResumeRefused(
                _("--resume: {last} belongs to a run planned for {planned} epochs (its one-cycle "
                  "learning-rate schedule ends there), but --epochs is {epochs}. Resume with "
                  "--epochs {planned}; to train longer, fine-tune from its weights in a new run "
                  "(chapter 4, section \"Continue training\", shows how).").format(
                    last=last, planned=planned, epochs=args.epochs))
        if scheduler.total_steps != planned_steps:
            raise ResumeRefused(
                _("--resume: {last} plans its learning-rate schedule for {saved} batches, this run "
                  "has {planned} ({per_epoch} per epoch): resume with the same --batch-size "
                  "({batch_size}) and number of processes ({processes}).").format(
                    last=last, saved=scheduler.total_steps, planned=planned_steps,
                    per_epoch=len(loader), batch_size=state["config"].get("batch_size"),
                    processes=state.get("world_size", 1)))
        start_epoch, best_acc = state["start_epoch"], state["best_acc"]
        history = state["history"]
        if is_main_process():
            print(_("resumed from {last}: {resumed_at}").format(
                      last=last, resumed_at=resumed_at(start_epoch, args.epochs)))
    wrapped: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}

    # last.pt every epoch, best.pt when val_acc improves. Every rank evaluates the full validation
    # split with the same weights, so all agree on the best; rank 0 writes, the others wait.
    # dcp: every rank writes its part of last/ (and best/), a collective step.
    callback = ShardedBestAndLast if args.checkpoint_format == "dcp" else BestAndLast
    checkpoint = callback(ckpt_dir, model=model, optimizer=optimizer, scheduler=scheduler,
                          metric="val_acc", best=best_acc, save=is_main_process(),
                          last_name=last.name, best_name=best.name, class_names=data.class_names,
                          config=config, world_size=world)

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        history = fit(wrapped, data, optimizer, epochs=args.epochs, scheduler=scheduler,
                      scheduler_step="batch",
                      start_epoch=start_epoch, history=history, callback=checkpoint,
                      train_loader=loader, progress=not args.quiet and is_main_process(),
                      desc=ngettext("pipeline ({count} process)", "pipeline ({count} processes)",
                                    world).format(count=world))
    finally:
        signal.signal(signal.SIGTERM, previous)
    test_loss, test_acc = evaluate(unwrap_model(wrapped), data.test)
    best_acc = checkpoint.best if checkpoint.best is not None else float("nan")
    summary = {"rank": rank, "epochs": args.epochs, "world_size": world, "device": str(device),
               "num_classes": args.num_classes, "best_val_acc": best_acc, "test_acc": test_acc,
               "test_loss": test_loss, "checkpoint": str(last)}
    if is_main_process():
        text = json.dumps(summary, indent=2) + "\n"  # atomic, never through a planted link
        _atomic_write(ckpt_dir / "metrics.json", lambda f: f.write(text.encode()))
    cleanup_distributed()
    return summary


def main(argv: list[str] | None = None) -> int:
    tolerate_narrow_console()
    args = parse_args(argv)
    try:
        summary = run(args)
    except (CheckpointError, ResumeRefused) as exc:  # a refused --resume, a locked folder, a full disk
        print(_("error: {message}").format(message=one_line(exc, lines=6, width=600)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        last = checkpoint_paths(args)[0]
        where = (_("the last complete checkpoint is {last}").format(last=last) if last.exists()
                 else _("no checkpoint was written yet"))
        print(_("\ninterrupted: {where}; continue with --resume").format(where=where), file=sys.stderr)
        return 130
    if summary["rank"] == 0:
        print(_("done: {classes} classes, {processes} process(es) on {device}; best "
                "val acc {best}, test acc {test}; checkpoint {checkpoint}").format(
                  classes=summary["num_classes"], processes=summary["world_size"], device=summary["device"],
                  best=measured(summary["best_val_acc"]), test=measured(summary["test_acc"]),
                  checkpoint=summary["checkpoint"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
