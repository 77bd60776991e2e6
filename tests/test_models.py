import pytest
import torch
from torch import nn

from helpers.models import Bottleneck, TinyResNet, count_parameters, parameter_table


def test_bottleneck_keeps_shape_and_adds_the_input():
    block = Bottleneck(64, 64).eval()
    x = torch.randn(2, 64, 8, 8)
    assert block(x).shape == x.shape
    assert isinstance(block.shortcut, nn.Identity)
    # with the residual branch zeroed, the block is relu(x): the skip really carries the input
    nn.init.zeros_(block.expand[1].weight)
    assert torch.equal(block(x), torch.relu(x))


def test_bottleneck_projects_when_shape_changes():
    block = Bottleneck(32, 64, stride=2)
    assert isinstance(block.shortcut, nn.Sequential)
    assert block(torch.randn(1, 32, 8, 8)).shape == (1, 64, 4, 4)


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_tiny_resnet_depth_registers_every_block(depth):
    net = TinyResNet(num_classes=7, depth=depth, width=16)
    assert isinstance(net.blocks, nn.ModuleList) and len(net.blocks) == depth
    per_block = count_parameters(Bottleneck(16, 16))
    assert count_parameters(net.blocks) == depth * per_block
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 7)
    assert net.forward_features(torch.randn(3, 1, 8, 8)).shape == (3, 16)


def test_tiny_resnet_rejects_zero_depth():
    with pytest.raises(ValueError, match="depth must be at least 1"):
        TinyResNet(depth=0)


def test_count_parameters_counts_shared_tensors_once_and_trainable_only():
    lin = nn.Linear(4, 4)
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_parameters(tied) == 20
    lin.bias.requires_grad_(False)
    assert count_parameters(tied, trainable_only=True) == 16


def test_parameter_table_sums_to_the_total():
    net = TinyResNet(num_classes=10, width=16, depth=2)
    table = parameter_table(net)
    rows = table.splitlines()
    assert rows[0].split() == ["module", "type", "parameters"]
    counts = {r.split()[0]: int(r.split()[-1].replace(",", "")) for r in rows[1:]}
    assert counts["total"] == count_parameters(net)
    assert sum(v for k, v in counts.items() if k != "total") == counts["total"]
    deeper = parameter_table(net, depth=2)
    assert "blocks.0" in deeper and "blocks.1" in deeper
