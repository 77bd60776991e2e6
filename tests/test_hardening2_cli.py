"""Issue 19 (hardening, round 2): exports, the deploy/export/pipeline command lines, torchrun.

Every bad input exits non-zero with one ``error:`` line and no traceback; each test failed on the
code before the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from test_hardening import _finishes  # a call that must finish (a hang is a failure)

from helpers import deploy
from helpers.export import ExportError, export_pt2, load_pt2, verify_export
from helpers.models import TinyResNet

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["zero", "one", "two", "three"]


def _net(num_classes: int = 4, seed: int = 0, **kwargs) -> TinyResNet:
    torch.manual_seed(seed)
    return TinyResNet(num_classes, **{"width": 8, "depth": 1, **kwargs}).eval()


def _one_error_line(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert sum("error:" in line for line in lines) == 1, err
    assert lines[-1].startswith(("error: ", "python -m helpers.")), err


def _python(code: str, *args: str, env: dict | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                           **(env or {})})


# --- item 1: a .pt2 whose entries are pickles is refused before torch unpickles them --------------


class _Payload:
    """Unpickling this runs ``exec``: what an attacker's weight entry would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _poisoned_pt2(tmp_path: Path, marker: Path) -> Path:
    good = export_pt2(_net(), tmp_path / "good.pt2", class_names=NAMES)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        config_name = next(n for n in src.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(src.read(config_name))
        fqn, meta = next(iter(config["config"].items()))
        meta["use_pickle"] = True
        payload = io.BytesIO()
        torch.save(_Payload(marker), payload)
        weight_name = config_name.rsplit("/", 1)[0] + "/" + meta["path_name"]
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == config_name:
                data = json.dumps(config).encode()
            elif info.filename == weight_name:
                data = payload.getvalue()
            dst.writestr(info, data)
    return bad


def test_a_pt2_with_a_pickled_weight_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran.txt"
    bad = _poisoned_pt2(tmp_path, marker)
    for load in (lambda: load_pt2(bad), lambda: verify_export(bad, _net())):
        with pytest.raises(ExportError, match=r"refused: it holds pickled Python objects .*"
                                              r"use_pickle.*must come from someone you trust"):
            load()
        assert not marker.exists(), "the pickled payload ran"
    program, names = load_pt2(tmp_path / "good.pt2")  # an honest export still loads
    assert names == NAMES and program(torch.zeros(2, 1, 8, 8)).shape == (2, 4)


def test_a_pt2_with_compiled_code_or_another_format_is_refused(tmp_path):
    good = export_pt2(_net(), tmp_path / "good.pt2", class_names=NAMES)
    with zipfile.ZipFile(good) as src:
        members = {info.filename: src.read(info.filename) for info in src.infolist()}
    root = next(iter(members)).split("/")[0]
    cases = {"aoti.pt2": {**members, f"{root}/data/aotinductor/model/x.so": b"\x7fELF"},
             "old.pt2": {k: v for k, v in members.items() if not k.endswith("archive_format")}}
    for name, content in cases.items():
        with zipfile.ZipFile(tmp_path / name, "w") as dst:
            for member, data in content.items():
                dst.writestr(member, data)
        with pytest.raises(ExportError, match="refused: it (holds compiled code|is not in the "
                                              "archive format)"):
            load_pt2(tmp_path / name)


# --- item 3 and 13: a full disk or a folder as the output: a clean error, no temp file ------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 16 KiB tmpfs (root on Linux only): a real full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


FULL_DISK = """
import sys, torch
from pathlib import Path
from helpers.export import ExportError, export_model, missing_onnx_packages
from helpers.models import TinyResNet
torch.manual_seed(0)
model = TinyResNet(4, width=32, depth=2).eval()
formats = ["pt2"] + ([] if missing_onnx_packages() else ["onnx"])
for fmt in formats:
    try:
        export_model(model, Path(sys.argv[1]) / f"x.{fmt}", class_names=list("abcd"))
    except ExportError as exc:
        print(f"{fmt}: ExportError: {exc}", flush=True)
"""


@pytest.mark.slow
def test_an_export_to_a_full_disk_is_a_clean_error_and_leaves_no_temp_file(tiny_disk):
    done = _python(FULL_DISK, str(tiny_disk))
    assert done.returncode == 0, done.stderr[-2000:]  # no abort (rc 134), no traceback
    assert "terminate called" not in done.stderr
    assert "pt2: ExportError: " in done.stdout and "the disk is full" in done.stdout
    from helpers.export import missing_onnx_packages

    if not missing_onnx_packages():
        assert "onnx: ExportError: " in done.stdout, done.stdout
    assert sorted(p.name for p in tiny_disk.iterdir()) == []


def test_export_to_an_existing_folder_is_refused_and_leaves_no_temp_file(tmp_path):
    folder = tmp_path / "out.pt2"
    folder.mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        export_pt2(_net(), folder, class_names=NAMES)
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["out.pt2"]


# --- items 4, 5, 8, 12 and Low: the deploy and export command lines ------------------------------


def _deployed(tmp_path: Path, model: TinyResNet | None = None, names=NAMES) -> Path:
    model = model if model is not None else _net()
    weights, _ = deploy.save_for_deployment(model, tmp_path / "digits.safetensors",
                                            class_names=names)
    return weights


def _clis(path: Path, *extra: str):
    from helpers import export

    return {"deploy": lambda: deploy.main(["--checkpoint", str(path), "--show", "0", *extra]),
            "export": lambda: export.main(["--checkpoint", str(path), "--format", "pt2", *extra])}


def test_a_fifo_as_the_sidecar_is_refused_without_hanging(tmp_path, capsys):
    weights = _deployed(tmp_path)
    sidecar = deploy.sidecar_path(weights)
    sidecar.unlink()
    os.mkfifo(sidecar)
    for name, call in _clis(weights).items():
        finished, result = _finishes(call)
        assert finished, f"{name} hangs on a FIFO sidecar"
        assert result == 2, result
        err = capsys.readouterr().err
        _one_error_line(err)
        assert "not a regular file" in err


def test_dev_zero_as_the_sidecar_is_refused(tmp_path, capsys):
    weights = _deployed(tmp_path)
    sidecar = deploy.sidecar_path(weights)
    sidecar.unlink()
    sidecar.symlink_to("/dev/zero")
    finished, result = _finishes(_clis(weights)["deploy"])
    assert finished and result == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("cli", ["deploy", "export"])
def test_a_symlink_loop_as_checkpoint_is_one_error_line(tmp_path, capsys, cli):
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to(loop)
    assert _clis(loop)[cli]() == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "symbolic link loop" in err


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("cli", ["deploy", "export"])
def test_a_sparse_tensor_in_the_weights_is_one_error_line(tmp_path, capsys, cli):
    weights = _deployed(tmp_path)
    state = _net().state_dict()
    state["fc.weight"] = state["fc.weight"].to_sparse()
    path = tmp_path / "digits.pt"
    torch.save(state, path)
    deploy.sidecar_path(weights).rename(deploy.sidecar_path(path))
    assert _clis(path)[cli]() == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "fc.weight is a sparse tensor" in err


def test_deploy_runs_a_3_channel_model_and_11_classes(tmp_path, capsys):
    rgb = _deployed(tmp_path / "rgb", _net(in_channels=3))
    assert deploy.main(["--checkpoint", str(rgb)]) == 0
    assert "the grey digits are repeated" in capsys.readouterr().out
    eleven = _deployed(tmp_path / "eleven", _net(11), names=[str(i) for i in range(11)])
    assert deploy.main(["--checkpoint", str(eleven)]) == 0
    out = capsys.readouterr().out
    assert "11 classes" in out and "the digits test split has 10" in out


def test_nan_weights_are_refused_not_scored(tmp_path, capsys):
    model = _net()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    weights = _deployed(tmp_path, model)
    for call in _clis(weights).values():
        assert call() == 2
        err = capsys.readouterr().err
        _one_error_line(err)
        assert "1 tensor(s) hold NaN or infinite values (fc.weight)" in err


def test_class_names_are_printed_escaped(tmp_path, capsys):
    names = ["\x1b[31mred", "two\nlines", "tab\there", "ok"]
    weights = _deployed(tmp_path, names=names)
    assert deploy.main(["--checkpoint", str(weights), "--show", "40"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mred" in out and "two\\nlines" in out
    assert "\t" not in out


@pytest.mark.parametrize("digits", ["３", "٣", "³"])
def test_unicode_digits_are_refused_as_numbers(tmp_path, capsys, digits):
    weights = _deployed(tmp_path)
    from helpers import export

    for main in (deploy.main, export.main):
        with pytest.raises(SystemExit) as exit_info:
            main(["--checkpoint", str(weights), "--format", "pt2", "--num-classes", digits]
                 if main is export.main else ["--checkpoint", str(weights), "--num-classes", digits])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        _one_error_line(err)
        assert "digits 0-9" in err


# --- items 10, 11 and Low: the pipeline command line ---------------------------------------------

PIPELINE = ["--num-classes", "2", "--epochs", "1", "--width", "8", "--depth", "1", "--quiet",
            "--device", "cpu"]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """One short pipeline run, with metrics.json planted as a link to a file it must not touch."""
    from helpers import pipeline

    folder = tmp_path_factory.mktemp("pipeline") / "run"
    folder.mkdir()
    target = folder.parent / "precious.txt"
    target.write_text("keep me\n")
    (folder / "metrics.json").symlink_to(target)
    assert pipeline.main([*PIPELINE, "--checkpoint-dir", str(folder)]) == 0
    return folder, target


def test_the_pipeline_never_writes_through_a_planted_link(pipeline_run):
    folder, target = pipeline_run
    assert target.read_text() == "keep me\n"
    metrics = folder / "metrics.json"
    assert not metrics.is_symlink() and json.loads(metrics.read_text())["epochs"] == 1


def _nested(depth: int) -> list:
    value: list = [0.5]
    for _ in range(depth):
        value = [value, value]  # 2**depth leaves, a few bytes each in the pickle (shared)
    return value


def _set_scheduler(o: dict, **fields) -> None:
    o["scheduler"].update(fields)


def _first_exp_avg(o: dict) -> None:
    o["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3)


RESUME_CASES = [
    ("epoch", lambda o: o.update(epoch=-5), "its epoch is -5"),
    ("exp_avg", _first_exp_avg, r"optimizer\['state'\]\[0\]\['exp_avg'\] has shape \[3\]"),
    ("total_steps", lambda o: _set_scheduler(o, total_steps="x"), r"scheduler\['total_steps'\]"),
    ("anneal", lambda o: _set_scheduler(o, _anneal_func_type="evil"),
     r"scheduler\['_anneal_func_type'\] is 'evil'"),
    ("last_epoch", lambda o: _set_scheduler(o, last_epoch=10**6), r"past total_steps"),
    ("history_key", lambda o: o["history"].update(evil=[1]), "history has the unexpected key 'evil'"),
    ("history_bomb", lambda o: o["history"].update(val_acc=_nested(40)),
     r"history\['val_acc'\] must hold numbers, got list"),
    ("history_type", lambda o: o.update(history=[1, 2]), "history must be a dict"),
    ("config_epochs", lambda o: o["config"].update(epochs="1"), r"config\['epochs'\] is '1'"),
    ("best_acc", lambda o: o.update(best_acc="high"), "best_acc is 'high', not a number"),
    ("world_size", lambda o: o.update(world_size=0), "world_size is '0'"),
]


@pytest.mark.parametrize("name, change, message", RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_a_tampered_last_pt_is_one_error_line_on_resume(pipeline_run, tmp_path, capsys, name,
                                                       change, message):
    import re
    import shutil

    from helpers import pipeline

    folder = tmp_path / "run"
    shutil.copytree(pipeline_run[0], folder, symlinks=True)
    obj = torch.load(folder / "last.pt", weights_only=True)
    change(obj)
    torch.save(obj, folder / "last.pt")
    assert pipeline.main([*PIPELINE, "--checkpoint-dir", str(folder), "--resume"]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert re.search(message, err), err


@pytest.mark.parametrize("argv, message", [
    (["--lr", "1e308"], "--lr: expected a positive float of at most 10"),
    (["--width", "1000000"], "--width: expected a positive int of at most 1024"),
    (["--depth", "10000"], "--depth: expected a positive int of at most 64"),
    (["--checkpoint-dir", "x" * 300], "a part of the path has 300 bytes"),
    (["--checkpoint-dir", "runs/a\x00b"], "null byte"),
    (["--num-classes", "３"], "--num-classes must be an integer from 2 to 10, got '３'"),
    (["--epochs", "３"], "--epochs: expected a positive int, got '３'"),
])
def test_absurd_options_are_parser_errors(argv, message, capsys):
    from helpers.pipeline import parse_args

    with pytest.raises(SystemExit) as info:
        parse_args(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert message in err


def test_unicode_digits_are_not_class_counts():
    from helpers.settings import SettingsError, parse_device, parse_num_classes

    for text in ("３", "٣", "５"):
        with pytest.raises(SettingsError):
            parse_num_classes(text)
    with pytest.raises(SettingsError):
        parse_device("cuda:０")
    assert parse_num_classes(" 7 ") == 7


@pytest.mark.parametrize("module", ["helpers.pipeline", "helpers.deploy", "helpers.export"])
def test_ctrl_c_while_importing_torch_is_one_line_and_130(tmp_path, module):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise KeyboardInterrupt\n")  # as if Ctrl-C landed here
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", module, "--checkpoint", "x"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "error: interrupted (Ctrl-C) while starting; nothing was done\n"


# --- item 6: a timeout stops the whole torchrun job, even workers that ignore SIGTERM -------------

STUBBORN = """
import os, pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
try:
    os.setsid()  # leave torchrun's session and process group
except OSError:
    pass
pathlib.Path(f"pid{os.environ['RANK']}").write_text(str(os.getpid()))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_a_timeout_stops_workers_that_ignore_sigterm_in_their_own_session(tmp_path):
    from helpers.launch import LaunchError, run_torchrun

    (tmp_path / "job_stubborn.py").write_text(STUBBORN)
    finished, result = _finishes(lambda: run_torchrun("job_stubborn", nproc_per_node=2,
                                                      cwd=tmp_path, timeout=10, quiet=True),
                                 timeout=60)
    pids = [int(p.read_text()) for p in tmp_path.glob("pid*")]
    try:
        assert pids, "the workers never started: raise the timeout of this test"
        assert finished, "run_torchrun did not return after its timeout"
        assert isinstance(result, LaunchError) and "ran longer than 10 s" in str(result)
        time.sleep(0.5)
        assert not [pid for pid in pids if _alive(pid)], "workers outlived the job"
    finally:
        for pid in pids:  # never leave them behind, whatever the code under test did
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_export_cli_escapes_names_and_refuses_a_folder_as_output(tmp_path, capsys):
    from helpers import export

    weights = _deployed(tmp_path, names=["\x1b[2Jzero", "one\ntwo", "2", "3"])
    folder = tmp_path / "out.pt2"
    folder.mkdir()
    args = ["--checkpoint", str(weights), "--format", "pt2"]
    assert export.main([*args, "--output", str(folder)]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "is a folder" in err and list(folder.iterdir()) == []
    assert export.main(args) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "class names: \\x1b[2Jzero one\\ntwo 2 3" in out


def test_odd_checkpoint_names_are_checkpoint_errors_in_the_deploy_api(tmp_path):
    for path, message in ((tmp_path / ("x" * 300 + ".safetensors"), "name is too long"),
                          (Path(f"{tmp_path}/a\x00b.safetensors"), "null byte"),
                          (tmp_path / "missing.safetensors", "no such checkpoint file")):
        with pytest.raises(deploy.CheckpointError, match=message):
            deploy.load_for_inference(path)
