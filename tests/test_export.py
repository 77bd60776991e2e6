"""helpers.export: ONNX and torch.export files, verified against the eager model; the command line."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import helpers.export as export
from helpers.checkpoint import save_checkpoint
from helpers.deploy import load_for_inference, save_for_deployment, sidecar_path
from helpers.export import (
    ExportError,
    export_model,
    export_onnx,
    format_of,
    load_onnx,
    load_pt2,
    main,
    verify_export,
)
from helpers.models import TinyResNet

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["zero", "one", "two", "three"]


def _net(num_classes=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    return TinyResNet(num_classes, **{"width": 8, "depth": 1, "dropout": 0.2, **kwargs}).eval()


def _images(n, seed=5):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def deployed(tmp_path):
    weights, _ = save_for_deployment(_net(), tmp_path / "digits.safetensors", class_names=NAMES)
    return weights


def _run_cli(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "helpers.export", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


# --- no export needed: quick ---------------------------------------------------------------------

def test_format_comes_from_the_suffix():
    assert format_of("a/b.onnx") == "onnx" and format_of("b.pt2") == "pt2"
    with pytest.raises(ExportError, match=r"unknown export format '\.pt'.*\*\.onnx or \*\.pt2"):
        format_of("weights.pt")


def test_a_model_in_training_mode_is_refused_before_any_export(tmp_path):
    with pytest.raises(ExportError, match=r"training mode.*model\.eval\(\)"):
        export_model(_net().train(), tmp_path / "m.pt2", class_names=NAMES)
    assert not (tmp_path / "m.pt2").exists()


def test_verify_names_a_missing_file(tmp_path):
    with pytest.raises(ExportError, match="no such file; export it first"):
        verify_export(tmp_path / "none.onnx", _net())


@pytest.mark.parametrize("case, message", [
    ("missing", "no such checkpoint file"),
    ("folder", "this is a folder, not a checkpoint file"),
    ("damaged", "damaged or is not a PyTorch file"),
    ("exported", "is an exported file already; pass the weights file"),
    ("wrong suffix", "does not end in .onnx, the suffix of --format onnx"),
    ("negative tolerance", "--tolerance must be a number >= 0"),
])
def test_bad_inputs_get_one_clear_error_line_and_status_2(tmp_path, deployed, capsys, case, message):
    args = {"missing": ["--checkpoint", tmp_path / "nope.safetensors"],
            "folder": ["--checkpoint", tmp_path],
            "damaged": ["--checkpoint", tmp_path / "bad.pt", "--num-classes", "4"],
            "exported": ["--checkpoint", tmp_path / "digits.onnx"],
            "wrong suffix": ["--checkpoint", deployed, "--output", tmp_path / "x.pt2"],
            "negative tolerance": ["--checkpoint", deployed, "--tolerance", "-1"],
            }[case]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "digits.onnx").write_bytes(b"")
    assert main([*map(str, args), "--format", "onnx"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.pt2").exists()


def test_a_sidecar_that_does_not_match_the_weights_is_refused(tmp_path, deployed, capsys):
    sidecar = sidecar_path(deployed)
    meta = json.loads(sidecar.read_text())
    meta["config"]["width"] = 16  # the weights are width 8
    sidecar.write_text(json.dumps(meta))
    assert main(["--checkpoint", str(deployed), "--format", "pt2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different shape" in err
    assert err.count("\n") == 1 and len(err) < 1500
    assert not deployed.with_suffix(".pt2").exists()


def test_a_class_count_override_that_does_not_match_is_refused(deployed, capsys):
    assert main(["--checkpoint", str(deployed), "--format", "pt2", "--num-classes", "7"]) == 2
    err = capsys.readouterr().err
    assert "fc.weight: checkpoint [4, 8] vs model [7, 8]" in err and err.count("\n") == 1


def test_missing_onnx_packages_are_named_with_the_install_command(deployed, capsys, monkeypatch):
    monkeypatch.setattr(export, "missing_onnx_packages", lambda: ["onnxscript", "onnxruntime"])
    assert main(["--checkpoint", str(deployed), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: ONNX export needs onnxscript, onnxruntime, which is not installed; run "
                   "`pip install onnx onnxscript onnxruntime` (or use --format pt2)\n")
    with pytest.raises(ExportError, match="pip install onnx onnxscript onnxruntime"):
        load_onnx(deployed.with_suffix(".onnx"))


def test_an_older_torch_says_onnx_export_needs_2_11(deployed, capsys, monkeypatch):
    # torch 2.6's exporter fails deep inside torch.onnx (AttributeError) with onnxscript >= 0.7
    monkeypatch.setattr(export.torch, "__version__", "2.6.0+cpu")
    assert export.missing_onnx_packages()[-1:] == ["torch>=2.11"]  # chapter 4's onnx_ready: False
    assert main(["--checkpoint", str(deployed), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ONNX export needs torch >= 2.11 (this is torch 2.6.0+cpu")
    assert err.count("\n") == 1 and "--format pt2" in err
    with pytest.raises(ExportError, match="needs torch >= 2.11"):
        export.export_onnx(_net(), deployed.with_suffix(".onnx"), class_names=NAMES)
    monkeypatch.setattr(export.torch, "__version__", "2.11.0")
    assert "torch>=2.11" not in export.missing_onnx_packages()


def test_the_onnx_packages_are_installed_here():
    # requirements.txt lists them for chapter 4; without them the ONNX half would be skipped silently
    assert [name for name in export.missing_onnx_packages() if name != export.ONNX_TORCH] == []


# --- real exports: slow (a few seconds each) ------------------------------------------------------

@pytest.mark.slow
def test_cli_onnx_round_trip_runs_unseen_batch_sizes_in_onnxruntime(deployed):
    result = _run_cli(["--checkpoint", deployed, "--format", "onnx"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == "loaded digits.safetensors: TinyResNet, 4 classes, width 8, depth 1"
    assert lines[1].startswith(f"exported {deployed.with_suffix('.onnx')} (")
    assert "dynamic batch dimension (traced at batch size 4)" in lines[1]
    assert lines[2].startswith("verified with onnxruntime in a fresh session at batch sizes 1, 7, "
                               "256: max abs diff ")
    assert lines[2].endswith("same predicted classes: True; class names: zero one two three")
    # the file alone, in onnxruntime: any batch size, the same logits and class names as eager
    run, names = load_onnx(deployed.with_suffix(".onnx"))
    eager, eager_names = load_for_inference(deployed)
    assert names == eager_names == NAMES
    for n in (1, 33):
        x = _images(n)
        got = run(x.numpy())
        assert isinstance(got, np.ndarray) and got.shape == (n, 4)
        with torch.no_grad():
            np.testing.assert_allclose(got, eager(x).numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_cli_pt2_round_trip_from_a_training_checkpoint(tmp_path, capsys):
    net = _net(3, width=12, depth=2)
    config = {"num_classes": 3, "width": 12, "depth": 2, "dropout": 0.2, "epochs": 5}
    ckpt = save_checkpoint(tmp_path / "best.pt", model=net, epoch=4, class_names=["a", "b", "c"],
                           config=config)
    output = tmp_path / "out" / "model.pt2"
    assert main(["--checkpoint", str(ckpt), "--format", "pt2", "--output", str(output)]) == 0
    out = capsys.readouterr().out
    assert "verified with torch.export.load in a fresh session at batch sizes 1, 7, 256" in out
    assert out.rstrip().endswith("class names: a b c")
    program, names = load_pt2(output)
    assert names == ["a", "b", "c"]
    assert not isinstance(program, TinyResNet)  # no model class involved
    for n in (1, 50):
        x = _images(n)
        with torch.no_grad():
            torch.testing.assert_close(program(x), net(x), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_a_file_over_the_tolerance_fails_with_status_1(deployed, capsys, monkeypatch):
    real_export = export.export_model

    def export_a_perturbed_copy(model, path, **kwargs):
        other = _net()
        with torch.no_grad():
            other.fc.bias.add_(0.01)  # the eager model and the file now differ by exactly 0.01
        return real_export(other, path, **kwargs)

    monkeypatch.setattr(export, "export_model", export_a_perturbed_copy)
    assert main(["--checkpoint", str(deployed), "--format", "pt2", "--tolerance", "1e-3"]) == 1
    captured = capsys.readouterr()
    assert "max abs diff 1.0e-02 (tolerance 1e-03)" in captured.out
    assert captured.err.startswith("error: the exported file differs from the eager model by "
                                   "1.0e-02, more than --tolerance 1e-03; do not ship it")
    # within a looser tolerance the same file passes
    assert main(["--checkpoint", str(deployed), "--format", "pt2", "--tolerance", "0.02"]) == 0


@pytest.mark.slow
def test_verify_tells_another_model_from_the_exported_one(tmp_path):
    path = export_onnx(_net(seed=0), tmp_path / "a.onnx", class_names=NAMES)
    assert verify_export(path, _net(seed=0)).within(1e-4)
    other = verify_export(path, _net(seed=1))
    assert other.max_abs_diff > 1e-2 and not other.within()
    assert sorted(other.max_abs_diffs) == [1, 7, 256]
    with pytest.raises(ExportError, match=r"output shape \(1, 4\) at batch size 1, but the model "
                                          r"gives \(1, 5\)"):
        verify_export(path, _net(5), batch_sizes=(1,))


class _AbstainsWhenUnsure(torch.nn.Module):
    """A Python `if` on tensor values: torch.export cannot trace it."""

    def __init__(self):
        super().__init__()
        self.net = _net()

    def forward(self, x):
        logits = self.net(x)
        if logits.softmax(1).max() < 0.5:
            return torch.zeros_like(logits)
        return logits


@pytest.mark.slow
def test_quiet_export_leaves_only_the_exception(capfd):
    model, x = _AbstainsWhenUnsure().eval(), _images(3)
    with pytest.raises(RuntimeError, match="data-dependent"):
        torch.export.export(model, (x,))
    assert "def forward" in capfd.readouterr().err  # what torch prints on its own
    with pytest.raises(RuntimeError, match="data-dependent"), export.quiet_export():
        torch.export.export(model, (x,))
    assert capfd.readouterr() == ("", "")
    assert logging.root.manager.disable == logging.NOTSET  # logging is back on afterwards


def test_a_package_that_cannot_be_found_counts_as_missing(monkeypatch):
    real = export.importlib.util.find_spec

    def find_spec(name, package=None):
        if name == "onnxruntime":
            return None
        if name == "onnxscript":
            raise ValueError("onnxscript.__spec__ is None")  # a half-removed install
        return real(name, package)

    monkeypatch.setattr(export.importlib.util, "find_spec", find_spec)
    assert export.missing_onnx_packages()[:2] == ["onnxscript", "onnxruntime"]
