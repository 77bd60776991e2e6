"""The pipeline with --checkpoint-format dcp: every rank writes its part of last/ and best/."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.checkpoint import CheckpointError, load_weights
from helpers.checkpoint.dcp_files import is_dcp_folder
from helpers.checkpoint.sharded import load_sharded, load_sharded_weights, read_sharded_extras
from helpers.models import TinyResNet
from helpers.training import one_cycle

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--num-classes", "3", "--epochs", "3", "--width", "8", "--depth", "1", "--quiet",
        "--seed", "0", "--checkpoint-format", "dcp"]
# Stops the run right after the first epoch's checkpoint, on every rank: a deterministic crash.
STOP_AFTER_FIRST_SAVE = """\
import sys

import helpers.pipeline as pipeline
from helpers.checkpoint.callbacks import ShardedBestAndLast

original = ShardedBestAndLast.__call__


def stop_after_first_save(self, epoch, history):
    original(self, epoch, history)
    if epoch == 0:
        raise KeyboardInterrupt


ShardedBestAndLast.__call__ = stop_after_first_save
sys.exit(pipeline.main(sys.argv[1:]))
"""

# Kills rank 0 with SIGKILL in the middle of the second epoch's save of `last`: after it wrote its
# shard into the temporary folder, before the .metadata index exists. A crash, not a clean stop.
KILL_DURING_SECOND_SAVE = """\
import os
import signal
import sys

import torch.distributed.checkpoint.filesystem as dcp_fs

import helpers.pipeline as pipeline
from helpers.checkpoint.callbacks import ShardedBestAndLast

write_data = dcp_fs.FileSystemWriter.write_data
original = ShardedBestAndLast.__call__


def write_then_die(self, plan, planner):
    future = write_data(self, plan, planner)
    future.wait()
    print("rank 0 wrote its shard of the second save and dies", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def arm_on_the_second_epoch(self, epoch, history):
    if epoch == 1 and os.environ.get("RANK", "0") == "0":
        dcp_fs.FileSystemWriter.write_data = write_then_die
    original(self, epoch, history)


ShardedBestAndLast.__call__ = arm_on_the_second_epoch
sys.exit(pipeline.main(sys.argv[1:]))
"""


def _env() -> dict:
    env = dict(os.environ, COURSE_DEVICE="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(launcher: list[str], *args, check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([*launcher, *map(str, args)], capture_output=True, text=True,
                            env=_env(), timeout=300, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _launchers(tmp_path: Path, processes: int, script: str = STOP_AFTER_FIRST_SAVE,
               name: str = "stop_after_first_save") -> tuple[list[str], list[str]]:
    """(the pipeline, the pipeline changed by ``script``: by default stopped after its first
    save) in 1 process or under torchrun."""
    stopper = tmp_path / f"{name}.py"
    stopper.write_text(script)
    if processes == 1:
        return [sys.executable, "-m", "helpers.pipeline"], [sys.executable, str(stopper)]
    torchrun = shutil.which("torchrun", path=_env()["PATH"])
    assert torchrun, "torchrun is not on PATH (it comes with torch)"
    start = [torchrun, "--standalone", f"--nproc-per-node={processes}"]
    return [*start, "-m", "helpers.pipeline"], [*start, str(stopper)]


def _weights(folder: Path) -> dict:
    model = TinyResNet(3, width=8, depth=1)
    load_sharded_weights(model, folder)
    return model.state_dict()


def _resume_is_bit_exact(tmp_path: Path, processes: int) -> None:
    pipeline, stopped = _launchers(tmp_path, processes)
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    _run(pipeline, *TINY, "--checkpoint-dir", straight)
    first = _run(stopped, *TINY, "--checkpoint-dir", crashed, check=False)
    assert first.returncode != 0
    assert f"the last complete checkpoint is {crashed / 'last'}; continue with --resume" in first.stderr
    assert read_sharded_extras(crashed / "last")["epoch"] == 0
    resumed = _run(pipeline, *TINY, "--checkpoint-dir", crashed, "--resume")
    assert f"resumed from {crashed / 'last'}: 1 epoch done, next epoch 2 of 3" in resumed.stdout
    assert resumed.stdout.count("done:") == 1 and f"{processes} process(es)" in resumed.stdout
    assert is_dcp_folder(crashed / "last") and is_dcp_folder(crashed / "best")
    assert not (crashed / "last.pt").exists()
    for name in ("last", "best"):
        a, b = _weights(straight / name), _weights(crashed / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    metrics = json.loads((crashed / "metrics.json").read_text())
    assert metrics["checkpoint"] == str(crashed / "last") and metrics["world_size"] == processes
    assert metrics == {**json.loads((straight / "metrics.json").read_text()),
                       "checkpoint": str(crashed / "last")}


def test_single_process_dcp_run_then_resume_is_bit_exact(tmp_path):
    _resume_is_bit_exact(tmp_path, 1)
    extras = read_sharded_extras(tmp_path / "straight" / "best")
    assert extras["class_names"] == ["0", "1", "2"] and extras["config"]["checkpoint_format"] == "dcp"
    with pytest.raises(CheckpointError, match="is a DCP checkpoint folder"):
        load_weights(TinyResNet(3, width=8, depth=1), tmp_path / "straight" / "last")


@pytest.mark.slow
def test_torchrun_two_processes_dcp_resume_is_bit_exact(tmp_path):
    _resume_is_bit_exact(tmp_path, 2)
    shards = sorted(p.name for p in (tmp_path / "crashed" / "last").iterdir())
    assert ".metadata" in shards and "__0_0.distcp" in shards


def test_resume_names_the_other_format(tmp_path):
    pipeline, _ = _launchers(tmp_path, 1)
    out = tmp_path / "run"
    _run(pipeline, *TINY[:-2], "--epochs", "1", "--checkpoint-dir", out)  # file format: last.pt
    refused = _run(pipeline, *TINY, "--checkpoint-dir", out, "--resume", check=False)
    assert refused.returncode == 2
    assert (f"--resume: no checkpoint at {out / 'last'} (it holds last.pt: add --checkpoint-format "
            f"file)") in refused.stderr


def _resumed_in_another_number_of_processes(crashed: Path, resumed: subprocess.CompletedProcess,
                                            processes: int) -> None:
    """The resumed run went on from epoch 2 and wrote its checkpoints with ``processes`` ranks.

    Not bit for bit what the first run would have done: with another number of processes each one
    reads other batches (DistributedSampler splits the shuffled data by the number of processes,
    and the batch size changed to keep the batches per epoch), and DDP sums the gradients over
    another number of ranks, in another order. So only the facts are compared, not the weights.
    """
    assert f"resumed from {crashed / 'last'}: 1 epoch done, next epoch 2 of 3" in resumed.stdout
    assert f"{processes} process(es)" in resumed.stdout
    extras = read_sharded_extras(crashed / "last")
    assert extras["epoch"] == 2 and extras["world_size"] == processes
    assert extras["history"]["epoch"] == [0, 1, 2]
    assert json.loads((crashed / "metrics.json").read_text())["world_size"] == processes
    files = sorted(p.name for p in (crashed / "last").iterdir())
    assert files == [".metadata", *[f"__{rank}_0.distcp" for rank in range(processes)]]
    assert not [p.name for p in crashed.iterdir() if p.name.startswith((".last.", ".best."))]
    model = TinyResNet(3, width=8, depth=1)
    load_sharded_weights(model, crashed / "best")  # deployable, in this process


@pytest.mark.slow
def test_sigkill_during_a_torchrun_dcp_save_keeps_last_and_one_process_resumes_it(tmp_path):
    _, killed = _launchers(tmp_path, 2, KILL_DURING_SECOND_SAVE, "kill_during_second_save")
    crashed = tmp_path / "crashed"
    first = _run(killed, *TINY, "--checkpoint-dir", crashed, check=False)
    assert first.returncode != 0 and "dies" in first.stdout, first.stdout + first.stderr[-3000:]
    assert [p.name for p in crashed.iterdir() if p.name.startswith(".last.tmp-")], \
        "the killed save should have left its unfinished temporary folder"
    # `last` is still the complete checkpoint of epoch 1 (index 0), loadable in this process
    model = TinyResNet(3, width=8, depth=1, dropout=0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = one_cycle(optimizer, max_lr=1e-2, epochs=3, steps_per_epoch=3)  # as the pipeline's
    info = load_sharded(crashed / "last", model=model, optimizer=optimizer, scheduler=scheduler,
                        restore_rng=False)
    assert info["epoch"] == 0 and info["world_size"] == 2 and info["history"]["epoch"] == [0]
    # One process with twice the batch size has the same batches per epoch (the same schedule)
    pipeline, _ = _launchers(tmp_path, 1)
    resumed = _run(pipeline, *TINY, "--batch-size", 128, "--checkpoint-dir", crashed, "--resume")
    _resumed_in_another_number_of_processes(crashed, resumed, 1)
    assert read_sharded_extras(crashed / "last")["history"]["val_acc"][0] == info["history"]["val_acc"][0]


@pytest.mark.slow
def test_a_one_process_dcp_checkpoint_resumes_under_torchrun(tmp_path):
    _, stopped = _launchers(tmp_path, 1)
    crashed = tmp_path / "crashed"
    first = _run(stopped, *TINY, "--batch-size", 128, "--checkpoint-dir", crashed, check=False)
    assert first.returncode != 0
    assert sorted(p.name for p in (crashed / "last").iterdir()) == [".metadata", "__0_0.distcp"]
    pipeline, _ = _launchers(tmp_path, 2)
    resumed = _run(pipeline, *TINY, "--checkpoint-dir", crashed, "--resume")
    _resumed_in_another_number_of_processes(crashed, resumed, 2)
