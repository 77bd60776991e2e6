"""Bit-exact resume: a run killed by SIGKILL and resumed equals an uninterrupted run, bit for bit.

Each run is a fresh interpreter (tests/scripts/resume_run.py): TinyResNet with dropout, the
shuffling loader of ``fit`` (torch's global RNG), AdamW and StepLR, a checkpoint every epoch.
"""

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EPOCHS, DIE_AFTER = 4, 1
SCRIPT = Path(__file__).parent / "scripts" / "resume_run.py"
ROOT = Path(__file__).resolve().parents[1]


def _start(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(out), "--epochs", str(EPOCHS), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, expected_rc: int = 0) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode == expected_rc, f"exit code {process.returncode}\n{out}\n{err}"
    return out


def _tensors(obj, prefix=""):
    """Flatten a checkpoint into {dotted path: value} so that every leaf can be compared."""
    if isinstance(obj, dict):
        items = {}
        for key, value in obj.items():
            items.update(_tensors(value, f"{prefix}{key}."))
        return items
    if isinstance(obj, (list, tuple)) and any(isinstance(v, (dict, list, tuple, torch.Tensor))
                                              for v in obj):
        items = {}
        for i, value in enumerate(obj):
            items.update(_tensors(value, f"{prefix}{i}."))
        return items
    return {prefix.rstrip("."): obj}


def _differences(a: dict, b: dict) -> list[str]:
    flat_a, flat_b = _tensors(a), _tensors(b)
    assert flat_a.keys() == flat_b.keys()
    diffs = []
    for key, value in flat_a.items():
        other = flat_b[key]
        if isinstance(value, torch.Tensor):
            same = value.dtype == other.dtype and torch.equal(value, other)
        else:
            same = value == other
        if not same:
            diffs.append(key)
    return diffs


@pytest.mark.slow
def test_killed_and_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path):
    straight, crashed, no_rng = tmp_path / "straight", tmp_path / "crashed", tmp_path / "no_rng"
    runs = [_start(straight), _start(crashed, "--die-after", str(DIE_AFTER))]
    _finish(runs[0])
    killed_output = _finish(runs[1], expected_rc=-signal.SIGKILL)
    assert killed_output.splitlines()[-1] == f"saved epoch {DIE_AFTER}"  # died right after saving
    assert torch.load(crashed / "last.pt", weights_only=True)["epoch"] == DIE_AFTER

    no_rng.mkdir()
    shutil.copy(crashed / "last.pt", no_rng / "last.pt")
    runs = [_start(crashed, "--resume"), _start(no_rng, "--resume", "--no-rng")]
    resumed_output = _finish(runs[0])
    _finish(runs[1])
    assert resumed_output.splitlines()[0] == f"resumed at epoch {DIE_AFTER + 1}"

    reference = torch.load(straight / "last.pt", weights_only=True)
    resumed = torch.load(crashed / "last.pt", weights_only=True)
    assert reference["epoch"] == resumed["epoch"] == EPOCHS - 1
    assert reference["history"]["epoch"] == list(range(EPOCHS))
    # every parameter, buffer, optimizer tensor, scheduler field, metric and RNG state
    assert len(reference["model"]) > 0 and len(reference["optimizer"]["state"]) > 0
    assert _differences(reference, resumed) == []

    # The comparison can fail: resuming without the saved RNG states drifts away.
    drifted = torch.load(no_rng / "last.pt", weights_only=True)
    diffs = _differences(reference, drifted)
    assert any(key.startswith("model.") for key in diffs)
    assert any(key.startswith("history.train_loss") for key in diffs)
