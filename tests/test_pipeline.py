"""The pipeline script: single process, torchrun with 2 CPU processes, SIGKILL + --resume, errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.checkpoint import load_weights
from helpers.models import TinyResNet
from helpers.pipeline import parse_args, resumed_at

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--width", "32", "--depth", "1", "--quiet", "--seed", "0"]


def _env() -> dict:
    env = dict(os.environ, COURSE_DEVICE="cpu", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _pipeline(*args, check=True, timeout=240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "helpers.pipeline", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout, cwd=ROOT)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")["model"]


def test_single_process_run_writes_loadable_checkpoints(tmp_path):
    out = tmp_path / "run"
    result = _pipeline("--num-classes", 4, "--epochs", 5, "--checkpoint-dir", out, *SMALL)
    assert "done: 4 classes, 1 process(es) on cpu" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["epochs"] == 5
    assert metrics["test_acc"] > 0.5  # 4 balanced classes: chance is 0.25
    model = TinyResNet(4, width=32, depth=1)
    report = load_weights(model, out / "best.pt")
    assert not report.missing_keys and not report.unexpected_keys
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 4 and ckpt["class_names"] == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_torchrun_two_cpu_processes_saves_unprefixed_weights_from_rank_0(tmp_path):
    out = tmp_path / "ddp"
    torchrun = shutil.which("torchrun", path=_env()["PATH"])
    assert torchrun, "torchrun is not on PATH (it comes with torch)"
    cmd = [torchrun, "--standalone", "--nproc-per-node=2", "-m", "helpers.pipeline",
           "--num-classes", "3", "--epochs", "2", "--checkpoint-dir", str(out), *SMALL]
    result = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("done:") == 1  # only rank 0 reports
    assert "2 process(es)" in result.stdout
    weights = _weights(out / "last.pt")
    assert not any(k.startswith("module.") for k in weights)
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    model = TinyResNet(3, width=32, depth=1)
    load_weights(model, out / "last.pt")


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["--num-classes", 5, "--epochs", 6, *SMALL]
    _pipeline(*args, "--checkpoint-dir", tmp_path / "straight")
    crashed = tmp_path / "crashed"
    cmd = [sys.executable, "-m", "helpers.pipeline", *map(str, args), "--checkpoint-dir", str(crashed)]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (crashed / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    epoch_at_kill = torch.load(crashed / "last.pt", weights_only=True)["epoch"]
    assert epoch_at_kill < 5
    resumed = _pipeline(*args, "--checkpoint-dir", crashed, "--resume")
    done = epoch_at_kill + 1  # the checkpoint's epoch is fit's 0-based index; prints count from 1
    epochs_done = f"{done} epoch{'' if done == 1 else 's'} done"
    assert f"resumed from {crashed / 'last.pt'}: {epochs_done}, next epoch {done + 1} of 6" in resumed.stdout
    straight, after = _weights(tmp_path / "straight" / "last.pt"), _weights(crashed / "last.pt")
    assert straight.keys() == after.keys()
    for key in straight:
        assert torch.equal(straight[key], after[key]), key


@pytest.mark.slow
def test_sigterm_leaves_the_last_complete_checkpoint(tmp_path):
    out = tmp_path / "term"
    cmd = [sys.executable, "-m", "helpers.pipeline", "--epochs", "50", "--checkpoint-dir", str(out),
           *SMALL]
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: the last complete checkpoint is" in err and "--resume" in err
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert 0 <= ckpt["epoch"] < 49


@pytest.mark.parametrize("argv,message", [
    (["--num-classes", "0"], "--num-classes must be an integer from 2 to 10, got '0'"),
    (["--num-classes", "abc"], "--num-classes must be an integer from 2 to 10, got 'abc'"),
    (["--device", "tpu"], "--device must be one of auto, cpu, cuda, cuda:N, mps; got 'tpu'"),
    (["--epochs", "-1"], "argument --epochs: expected a positive int, got '-1'"),
    (["--lr", "fast"], "argument --lr: expected a positive float, got 'fast'"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
])
def test_bad_options_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("usage: python -m helpers.pipeline")


def test_resume_with_another_epoch_count_says_what_to_do(tmp_path):
    _pipeline("--num-classes", 2, "--epochs", 1, "--checkpoint-dir", tmp_path, *SMALL)
    result = _pipeline("--num-classes", 2, "--epochs", 3, "--checkpoint-dir", tmp_path, "--resume",
                       *SMALL, check=False)
    assert result.returncode != 0
    assert "planned for 1 epochs" in result.stderr and "Resume with --epochs 1" in result.stderr
    assert 'chapter 4, section "Continue training", shows how' in result.stderr


def test_a_resume_says_epochs_done_and_the_next_one_counted_from_1():
    assert resumed_at(3, 6) == "3 epochs done, next epoch 4 of 6"  # start_epoch 3: indices 0-2 done
    assert resumed_at(1, 3) == "1 epoch done, next epoch 2 of 3"
    assert resumed_at(6, 6) == "6 epochs done of 6, nothing left to train"


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path):
    result = _pipeline("--checkpoint-dir", tmp_path / "none", "--resume", *SMALL, check=False)
    assert result.returncode != 0
    assert "no checkpoint at" in result.stderr and "run once without --resume" in result.stderr


@pytest.mark.slow
def test_one_cycle_steps_per_batch_and_resume_needs_the_same_batches(tmp_path):
    _pipeline("--num-classes", 2, "--epochs", 3, "--lr", "0.01", "--checkpoint-dir", tmp_path, *SMALL)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    sched = ckpt["scheduler"]
    assert sched["last_epoch"] == sched["total_steps"] > 3  # stepped after every batch, all taken
    assert ckpt["history"]["lr"][-1] > 0.01 / 10  # the last epoch starts at a useful learning rate
    result = _pipeline("--num-classes", 2, "--epochs", 3, "--checkpoint-dir", tmp_path, "--resume",
                       "--batch-size", 32, *SMALL, check=False)
    assert result.returncode != 0
    assert f"schedule for {sched['total_steps']} batches" in result.stderr
    assert "same --batch-size (64)" in result.stderr
