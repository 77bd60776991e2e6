"""Train a TinyResNet on the digits, checkpointing every epoch; optionally die or resume.

    python tests/scripts/resume_run.py OUT_DIR --epochs 4 [--die-after 1] [--resume [--no-rng]]

Every epoch ``fit``'s callback writes OUT_DIR/last.pt with ``save_checkpoint``. ``--die-after K``
sends this process SIGKILL right after the epoch-K checkpoint is written: a power cut, no cleanup.
``--resume`` continues from OUT_DIR/last.pt; ``--no-rng`` resumes without the saved RNG states.
Used by tests/test_resume.py; each run is a fresh interpreter, seeded with ``seed_everything``.
"""

import argparse
import os
import signal
from pathlib import Path

import torch

from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.data import load_digits
from helpers.models import TinyResNet
from helpers.seeding import seed_everything
from helpers.training import History, fit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--die-after", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-rng", action="store_true")
    args = parser.parse_args(argv)

    seed_everything(0)
    torch.set_num_threads(1)  # same kernels and reduction order in every process
    data = load_digits(10)
    model = TinyResNet(10, width=16, depth=1, dropout=0.3)  # dropout draws from torch's RNG
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    last = args.out / "last.pt"
    history, start_epoch = History(), 0
    if args.resume:
        info = load_checkpoint(last, model=model, optimizer=optimizer, scheduler=scheduler,
                               restore_rng=not args.no_rng)
        history, start_epoch = History.from_dict(info["history"]), info["start_epoch"]
        print(f"resumed at epoch {start_epoch}", flush=True)

    def callback(epoch: int, hist: History) -> None:
        save_checkpoint(last, model=model, optimizer=optimizer, scheduler=scheduler, epoch=epoch,
                        history=hist.to_dict())
        print(f"saved epoch {epoch}", flush=True)
        if epoch == args.die_after:
            os.kill(os.getpid(), signal.SIGKILL)

    # fit's default loader shuffles with torch.randperm from the global RNG each epoch
    fit(model, data, optimizer, epochs=args.epochs, scheduler=scheduler, start_epoch=start_epoch,
        history=history, callback=callback, progress=False, batch_size=64)


if __name__ == "__main__":
    main()
