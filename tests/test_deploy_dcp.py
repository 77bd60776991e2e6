"""python -m helpers.deploy and python -m helpers.export with a DCP checkpoint folder."""

import pytest
import torch

from helpers import deploy
from helpers.checkpoint.sharded import save_sharded
from helpers.deploy import load_for_inference, read_deploy_info, tiny_resnet_config
from helpers.export_cli import main as export_main
from helpers.models import TinyResNet

NAMES = ["zero", "one", "two"]


@pytest.fixture
def folder(tmp_path):
    """A pipeline-like ``best`` folder: model weights, epoch, class names and config (no group)."""
    torch.manual_seed(0)
    model = TinyResNet(3, width=8, depth=1)
    config = {"num_classes": 3, "width": 8, "depth": 1, "checkpoint_format": "dcp"}
    return save_sharded(tmp_path / "best", model=model, epoch=2, class_names=NAMES,
                        config=config), model


def test_deploy_reads_a_dcp_folder(folder, capsys):
    path, trained = folder
    info = read_deploy_info(path)
    assert info.class_names == NAMES and info.config["width"] == 8
    model, names = load_for_inference(path)
    assert names == NAMES and tiny_resnet_config(model)["num_classes"] == 3
    for key, value in trained.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert deploy.main(["--checkpoint", str(path), "--show", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("loaded best: TinyResNet, 3 classes, width 8, depth 1")


def test_deploy_names_a_dcp_folder_of_another_model(folder, capsys):
    path, _ = folder
    assert deploy.main(["--checkpoint", str(path), "--width", "16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "best" in err


def test_export_accepts_a_dcp_folder(folder, capsys):
    path, _ = folder
    assert export_main(["--checkpoint", str(path), "--format", "pt2"]) == 0
    out = capsys.readouterr().out
    assert "loaded best: TinyResNet, 3 classes" in out and "same predicted classes: True" in out
    assert (path.parent / "best.pt2").is_file()
