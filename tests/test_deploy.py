"""helpers.deploy: weights + sidecar, rebuilding the model, predicting, the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.checkpoint import CheckpointError, outputs_equal, save_checkpoint, save_weights
from helpers.data import load_digits
from helpers.deploy import (
    load_for_inference,
    main,
    predict_names,
    read_deploy_info,
    save_for_deployment,
    sidecar_path,
    tiny_resnet_config,
)
from helpers.models import TinyResNet
from helpers.plots import predict
from helpers.report import measured

ROOT = Path(__file__).resolve().parents[1]


def _net(num_classes=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"width": 8, "depth": 1, "dropout": 0.2, **kwargs}
    return TinyResNet(num_classes, **kwargs)


def _x(n=6):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _names(n):
    return [f"digit {i}" for i in range(n)]


def test_config_is_read_from_the_layers_and_rebuilds_the_same_model():
    net = _net(5, width=12, depth=3, dropout=0.25)
    config = tiny_resnet_config(net)
    assert config == {"num_classes": 5, "in_channels": 1, "width": 12, "depth": 3, "dropout": 0.25}
    rebuilt = TinyResNet(**config)
    shapes = {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert shapes == {k: v.shape for k, v in net.state_dict().items()}
    assert tiny_resnet_config(nn.DataParallel(net)) == config  # wrappers are looked through


def test_config_refuses_other_models():
    with pytest.raises(TypeError, match="expected a TinyResNet, got Sequential"):
        tiny_resnet_config(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_save_then_load_gives_the_same_outputs_in_eval_mode(tmp_path, suffix):
    net = _net(4)
    weights, sidecar = save_for_deployment(net, tmp_path / f"d{suffix}", class_names=_names(4))
    assert weights == tmp_path / f"d{suffix}" and sidecar == tmp_path / "d.json"
    meta = json.loads(sidecar.read_text())
    assert meta == {"class_names": _names(4), "config": tiny_resnet_config(net)}
    state = torch.load(weights, weights_only=True) if suffix == ".pt" else None
    if state is not None:  # weights only: no optimizer, no epoch, no extras
        assert all(isinstance(v, torch.Tensor) for v in state.values())
    model, names = load_for_inference(weights)
    assert names == _names(4) and not model.training
    assert all(not m.training for m in model.modules())
    assert outputs_equal(model, net, _x())
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_class_names_must_match_the_outputs(tmp_path):
    with pytest.raises(ValueError, match="the model has 4 outputs but 3 class names"):
        save_for_deployment(_net(4), tmp_path / "d.safetensors", class_names=_names(3))
    assert not (tmp_path / "d.safetensors").exists()


def test_a_training_checkpoint_with_extras_needs_no_sidecar(tmp_path):
    net = _net(3, width=16, depth=2)
    optimizer = torch.optim.AdamW(net.parameters())
    config = {"num_classes": 3, "width": 16, "depth": 2, "dropout": 0.2, "epochs": 5,
              "checkpoint_dir": "runs/x", "lr": 0.01}  # what helpers.pipeline stores
    path = save_checkpoint(tmp_path / "last.pt", model=net, optimizer=optimizer, epoch=4,
                           class_names=["0", "1", "2"], config=config)
    info = read_deploy_info(path)
    assert info.source == "checkpoint extras" and info.class_names == ["0", "1", "2"]
    assert info.config == {"num_classes": 3, "width": 16, "depth": 2, "dropout": 0.2}
    model, names = load_for_inference(path)
    assert outputs_equal(model, net, _x())


def test_bare_weights_need_the_architecture_from_the_caller(tmp_path):
    net = _net(4, width=8, depth=1)
    path = save_weights(net, tmp_path / "bare.pt")
    assert read_deploy_info(path) is None
    with pytest.raises(CheckpointError, match=r"class count is unknown.*no sidecar bare.json"
                                              r"(.|\n)*Pass --num-classes"):
        load_for_inference(path)
    model, names = load_for_inference(path, num_classes=4, width=8, depth=1)
    assert names == ["0", "1", "2", "3"] and outputs_equal(model, net, _x())
    with pytest.raises(CheckpointError, match="different shape"):
        load_for_inference(path, num_classes=4, width=16, depth=1)


def test_a_broken_sidecar_is_named(tmp_path):
    weights, sidecar = save_for_deployment(_net(2), tmp_path / "d.safetensors", class_names=_names(2))
    sidecar.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"d.json: not valid JSON"):
        read_deploy_info(weights)
    sidecar.write_text('{"class_names": ["a", "b"]}')
    with pytest.raises(CheckpointError, match="it has no class_names and config"):
        read_deploy_info(weights)
    assert sidecar_path("a/b.pt") == Path("a/b.json")


def test_predict_names_uses_eval_mode_and_restores_the_mode():
    net = _net(4, dropout=0.5).train()
    x = _x(16)
    with torch.no_grad():
        expected = [_names(4)[i] for i in net.eval()(x).argmax(1)]
    net.train()
    assert predict_names(net, x, _names(4)) == expected
    assert net.training  # the caller's mode comes back


def test_main_prints_accuracy_and_writes_predictions(tmp_path, capsys):
    net = _net(3)
    weights, _ = save_for_deployment(net, tmp_path / "d.safetensors", class_names=["a", "b", "c"])
    out = tmp_path / "pred.json"
    assert main(["--checkpoint", str(weights), "--show", "4", "--predictions", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    test = load_digits(3).test
    expected = predict(net, test.X)
    accuracy = float((expected == test.y).float().mean())
    assert printed[0] == "loaded d.safetensors: TinyResNet, 3 classes, width 8, depth 1; eval mode: True"
    assert printed[1] == f"test accuracy {measured(accuracy)} on {len(test.y)} images"
    assert printed[2] == "first 4 predicted: " + " ".join("abc"[int(i)] for i in expected[:4])
    assert printed[3] == "first 4 true:      " + " ".join("abc"[int(i)] for i in test.y[:4])
    saved = json.loads(out.read_text())
    assert saved["predicted"] == expected.tolist() and saved["class_names"] == ["a", "b", "c"]


def test_main_exit_codes(tmp_path, capsys):
    weights, _ = save_for_deployment(_net(2), tmp_path / "d.safetensors", class_names=_names(2))
    assert main(["--checkpoint", str(weights), "--min-accuracy", "1.01"]) == 1
    assert "is below --min-accuracy 1.01" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    bare = save_weights(_net(2), tmp_path / "bare.pt")
    assert main(["--checkpoint", str(bare)]) == 2
    assert "Pass --num-classes" in capsys.readouterr().err
    assert main(["--checkpoint", str(bare), "--num-classes", "2", "--width", "8", "--depth", "1",
                 "--show", "0"]) == 0
    assert "first" not in capsys.readouterr().out


def test_command_line_in_a_fresh_process(tmp_path):
    weights, _ = save_for_deployment(_net(2), tmp_path / "d.safetensors", class_names=_names(2))
    env = dict(os.environ, COURSE_DEVICE="cpu", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "helpers.deploy", "--checkpoint", str(weights),
                             "--show", "2"], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loaded d.safetensors: TinyResNet, 2 classes, width 8, depth 1")
    assert "first 2 predicted: digit" in result.stdout
