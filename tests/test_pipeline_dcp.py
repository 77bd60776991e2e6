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
from helpers.checkpoint.sharded import load_sharded_weights, read_sharded_extras
from helpers.models import TinyResNet

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


def _launchers(tmp_path: Path, processes: int) -> tuple[list[str], list[str]]:
    """(the pipeline, the pipeline stopped after its first save) in 1 process or under torchrun."""
    stopper = tmp_path / "stop_after_first_save.py"
    stopper.write_text(STOP_AFTER_FIRST_SAVE)
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
    assert f"resumed from {crashed / 'last'} at epoch 1/3" in resumed.stdout
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
