"""save_checkpoint under SIGKILL: the file on disk is always a complete old or a complete new state.

A writer process saves epochs 1, 2, 3, ... to one path in a loop and is killed with SIGKILL at a
random moment; then the path must load and hold one whole state. A kill during a save may leave the
temporary file ``.last.pt.tmp-<pid of the writer>-<thread>-<random>`` next to it, which nothing
reads and the next save or ``load_checkpoint`` in that folder removes (its process no longer
exists). Writers fork
from a ``forkserver`` that has already imported torch, so a trial costs milliseconds, not an
interpreter start-up.
"""

import multiprocessing
import os
import random
import re
import time

import pytest
import torch
from torch import nn

from helpers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, temp_path_for

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL and fork")

TRIALS = 30
WIDTH = 512  # a 512x512 float32 layer: each save writes 1 MiB, so most kills land mid-write
TEMP_NAME = re.compile(r"^\.last\.pt\.tmp-(\d+)-\d+-[0-9a-f]+$")  # pid, thread, random


def _model(value: float = 0.0) -> nn.Linear:
    model = nn.Linear(WIDTH, WIDTH)
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(value)
    return model


def _writer(path, ready, done, first_epoch, atomic):
    """Save epochs first_epoch, first_epoch + 1, ... forever; publish each finished one."""
    torch.set_num_threads(1)
    model = _model()
    ready.value = 1
    epoch = first_epoch
    while True:
        with torch.no_grad():
            model.weight.fill_(epoch)
            model.bias.fill_(epoch)
        if atomic:
            save_checkpoint(path, model=model, epoch=epoch, tag=f"epoch {epoch}", marks=[epoch] * 3)
        else:  # what a plain torch.save does under the same kills
            torch.save({"epoch": epoch, "model": model.state_dict()}, path)
        done.value = epoch
        epoch += 1


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "helpers.checkpoint", __name__])
    yield ctx
    stop = getattr(getattr(multiprocessing.forkserver, "_forkserver", None), "_stop", None)
    if stop is not None:  # private in CPython; without it the server exits with pytest
        stop()


def _kill_at_random(ctx, path, first_epoch, rng, *, atomic):
    """Start a writer, SIGKILL it after a random delay; return (its pid, last finished epoch)."""
    ready = ctx.Value("i", 0, lock=False)  # no lock: a killed holder would deadlock the reader
    done = ctx.Value("q", 0, lock=False)
    writer = ctx.Process(target=_writer, args=(str(path), ready, done, first_epoch, atomic))
    writer.start()
    deadline = time.monotonic() + 60
    while not ready.value:
        assert writer.is_alive() and time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.001)
    time.sleep(rng.uniform(0.0, 0.08))
    writer.kill()  # SIGKILL: no cleanup, no finally, no flush
    writer.join()
    assert writer.exitcode == -9
    return writer.pid, done.value


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_complete_checkpoint(tmp_path, forkserver):
    rng = random.Random(0)
    path = tmp_path / "last.pt"
    probe = _model()
    in_file = None  # the epoch the file held after the previous trial
    killed, temps, kinds = set(), 0, {"old": 0, "new": 0}
    for trial in range(TRIALS):
        first = (trial + 1) * 100_000 + 1
        pid, finished = _kill_at_random(forkserver, path, first, rng, atomic=True)
        killed.add(pid)
        previous = finished if finished else in_file  # the last state known to be complete
        newer = finished + 1 if finished else first  # the save that may have been in flight
        if not path.exists():
            assert previous is None, f"trial {trial}: the checkpoint disappeared"
            continue
        leftovers = [p.name for p in tmp_path.iterdir() if p != path]
        matches = [TEMP_NAME.match(name) for name in leftovers]
        assert all(matches), f"unexpected files next to the checkpoint: {leftovers}"
        assert {int(m.group(1)) for m in matches} <= killed  # only temp files of killed writers
        temps += len(leftovers)
        info = load_checkpoint(path, model=probe, restore_rng=False)
        left = [p.name for p in tmp_path.iterdir() if p != path]
        assert not left, f"trial {trial}: load_checkpoint left the dead writers' temps: {left}"
        epoch = info["epoch"]
        assert epoch in (previous, newer), f"trial {trial}: {epoch}, not {previous} or {newer}"
        kinds["old" if epoch == previous else "new"] += 1
        assert torch.all(probe.weight == epoch) and torch.all(probe.bias == epoch)
        assert info["tag"] == f"epoch {epoch}" and info["marks"] == [epoch] * 3
        assert torch.load(path, weights_only=True)["epoch"] == epoch
        in_file = epoch
    print(f"{TRIALS} kills: file held the older state {kinds['old']}x, the newer "
          f"{kinds['new']}x; {temps} temp files left by kills mid-save, each removed by the next load")
    assert in_file is not None
    assert temps > 0, "no kill landed during a save; the test exercised nothing"


def test_temp_file_name_is_recognisable(tmp_path):
    assert TEMP_NAME.match(temp_path_for(tmp_path / "last.pt").name)
    assert temp_path_for(tmp_path / "last.pt").parent == tmp_path


def test_the_same_kills_break_a_plain_torch_save(tmp_path, forkserver):
    """The harness can fail: writing straight onto the target leaves truncated files."""
    rng = random.Random(1)
    path = tmp_path / "last.pt"
    broken = 0
    for trial in range(10):
        _kill_at_random(forkserver, path, (trial + 1) * 100_000 + 1, rng, atomic=False)
        try:
            load_checkpoint(path, model=_model(), restore_rng=False)
        except (CheckpointError, FileNotFoundError):
            broken += 1
    assert broken > 0
