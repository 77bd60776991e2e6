"""Issue 13 items 1, 5, 6, 7: the deploy sidecar and the two CLIs refuse bad input with one line.

Every bad input exits non-zero with ``error: ...`` on stderr and no traceback, before anything big
is built or any epoch is trained.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import deploy, pipeline
from helpers.checkpoint import FolderLock, save_checkpoint
from helpers.models import TinyResNet

ROOT = Path(__file__).resolve().parents[1]


def _deployed(tmp_path: Path) -> Path:
    model = TinyResNet(4, width=8, depth=1)
    weights, _ = deploy.save_for_deployment(model, tmp_path / "digits.safetensors",
                                            class_names=["0", "1", "2", "3"])
    return weights


def _one_error_line(err: str) -> None:
    assert err.startswith("error: ") and "Traceback" not in err, err


# --- item 1: the sidecar is validated before anything is built ------------------------------------

GOOD = {"num_classes": 4, "in_channels": 1, "width": 8, "depth": 1, "dropout": 0.0}
BAD_CONFIGS = [
    ({**GOOD, "width": 100_000}, r"config width must be a whole number from 1 to 1024, got 100000"),
    ({**GOOD, "num_classes": 10**9}, r"config num_classes must be a whole number from 1 to 100000"),
    ({**GOOD, "depth": 10**6}, r"config depth must be a whole number from 1 to 64, got 1000000"),
    ({**GOOD, "width": "16"}, r"config width must be a whole number .* got '16'"),
    ({**GOOD, "depth": -1}, r"config depth must be a whole number .* got -1"),
    ({**GOOD, "width": True}, r"config width must be a whole number .* got True"),
    ({**GOOD, "dropout": 5}, r"config dropout must be a number in \[0, 1\), got 5"),
    ([1, 2], r"config must be a dict of TinyResNet arguments, got list"),
]


@pytest.mark.parametrize("config, message", BAD_CONFIGS)
def test_bad_sidecar_configs_are_refused_before_building(tmp_path, config, message, capsys):
    weights = _deployed(tmp_path)
    deploy.sidecar_path(weights).write_text(json.dumps({"class_names": list("0123"), "config": config}))
    started = time.perf_counter()
    with pytest.raises(deploy.CheckpointError, match=message):
        deploy.load_for_inference(weights)
    assert time.perf_counter() - started < 5  # nothing huge was allocated
    assert deploy.main(["--checkpoint", str(weights)]) == 2
    _one_error_line(capsys.readouterr().err)


SIDECAR_BYTES = [
    (b"\xff\xfe not utf-8", "not UTF-8 text"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|sidecar is"),
    (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    (json.dumps({"class_names": "0123", "config": GOOD}).encode(),
     "class_names must be a list of strings, got str"),
    (json.dumps({"class_names": [0, 1, 2, 3], "config": GOOD}).encode(),
     "each class name must be a string"),
    (b" " * (2 << 20), r"the sidecar is 2,097,152 bytes"),
]


@pytest.mark.parametrize("content, message", SIDECAR_BYTES, ids=["utf8", "huge_deep", "deep", "str_names",
                                                                  "int_names", "size"])
def test_bad_sidecar_files_are_one_error(tmp_path, content, message, capsys):
    weights = _deployed(tmp_path)
    deploy.sidecar_path(weights).write_bytes(content)
    with pytest.raises(deploy.CheckpointError, match=message):
        deploy.read_deploy_info(weights)
    assert deploy.main(["--checkpoint", str(weights)]) == 2
    _one_error_line(capsys.readouterr().err)


def test_overrides_from_the_command_line_are_checked_too(tmp_path, capsys):
    weights = _deployed(tmp_path)
    assert deploy.main(["--checkpoint", str(weights), "--width", "100000"]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "width must be a whole number from 1 to 1024" in err


def test_checkpoint_extras_are_checked_like_a_sidecar(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", model=TinyResNet(4, width=8, depth=1), epoch=0,
                           class_names="0123", config=GOOD)
    with pytest.raises(deploy.CheckpointError, match="class_names must be a list of strings"):
        deploy.read_deploy_info(path)


def test_a_good_sidecar_still_loads(tmp_path):
    model, names = deploy.load_for_inference(_deployed(tmp_path))
    assert names == ["0", "1", "2", "3"] and not model.training


# --- item 6: two processes saving the same deployment path -----------------------------------------


def test_two_processes_saving_the_same_deployment_do_not_crash(tmp_path):
    code = ("import sys; from helpers.deploy import save_for_deployment; "
            "from helpers.models import TinyResNet; m = TinyResNet(2, width=4, depth=1)\n"
            "for _ in range(40): save_for_deployment(m, sys.argv[1], class_names=['a', 'b'])")
    target = tmp_path / "d.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target)], cwd=ROOT, env=env,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "d.pt"]
    assert json.loads((tmp_path / "d.json").read_text())["class_names"] == ["a", "b"]


# --- item 7: the pipeline CLI --------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--lr", "nan"], "argument --lr: expected a positive finite float, got 'nan'"),
    (["--lr", "inf"], "argument --lr: expected a positive finite float, got 'inf'"),
    (["--seed", "-1"], "argument --seed: expected a seed from 0 to 2**32 - 1, got '-1'"),
    (["--seed", "x"], "argument --seed: expected a whole number, got 'x'"),
    (["--dropout", "nan"], "--dropout must be in [0, 1), got nan"),
])
def test_pipeline_refuses_bad_numbers_in_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        pipeline.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_pipeline_refuses_a_file_as_checkpoint_dir_before_training(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    for folder in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(SystemExit) as exit_info:
            pipeline.parse_args(["--checkpoint-dir", str(folder)])
        assert exit_info.value.code == 2
        assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_pipeline_refuses_an_unwritable_checkpoint_dir(tmp_path, capsys):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        pipeline.parse_args(["--checkpoint-dir", str(locked / "run")])
    assert "no permission to write" in capsys.readouterr().err


def test_resume_from_a_checkpoint_without_config_is_one_error_line(tmp_path, capsys):
    args = ["--checkpoint-dir", str(tmp_path), "--resume", "--quiet", "--device", "cpu",
            "--epochs", "2", "--width", "8", "--depth", "1"]
    model = pipeline.build_model(pipeline.parse_args(args))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.01, total_steps=10)
    save_checkpoint(tmp_path / "last.pt", model=model, optimizer=optimizer, scheduler=scheduler,
                    epoch=0)  # resumable, but not written by the pipeline: no config, no history
    assert pipeline.main(args) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "it has no config, history, best_acc, so it was not written by helpers.pipeline" in err


def test_resume_from_a_damaged_checkpoint_is_one_error_line(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 not really")
    assert pipeline.main(["--checkpoint-dir", str(tmp_path), "--resume", "--quiet",
                          "--device", "cpu"]) == 2
    _one_error_line(capsys.readouterr().err)


# --- item 5: a second run in the same folder ------------------------------------------------------


def test_a_second_pipeline_run_in_a_locked_folder_is_refused(tmp_path, capsys):
    with FolderLock(tmp_path):
        assert pipeline.main(["--checkpoint-dir", str(tmp_path), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert f"another run is using this folder (process {os.getpid()} on " in err
    assert not (tmp_path / "last.pt").exists()
