import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops import FrozenBatchNorm2d

from helpers.models import TinyResNet
from helpers.modify import (
    ResNetWithExtraInput,
    ResNetWithFeatures,
    capture_activations,
    convert_frozen_batchnorm,
    freeze,
    head_in_features,
    load_backbone_weights,
    param_groups,
    replace_head,
    set_batchnorm_eval,
    show_source,
    strip_head,
    trainable_by_module,
    trainable_parameters,
    unfreeze,
)


def small_resnet(num_classes: int = 1000) -> ResNet:
    """A torchvision ResNet with one BasicBlock per stage: same layout as resnet18, built fast."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_replace_head_keeps_in_features_and_changes_the_output():
    net = small_resnet()
    assert replace_head(net, 5) is net
    assert isinstance(net.fc, nn.Linear) and (net.fc.in_features, net.fc.out_features) == (512, 5)
    assert net.eval()(X).shape == (2, 5)


def test_replace_head_follows_dotted_paths_and_bias_and_dtype():
    net = nn.Sequential(nn.Flatten(), nn.Sequential(nn.ReLU(), nn.Linear(12, 3, bias=False)))
    net = net.double()
    replace_head(net, 7, attr="1.1")
    head = net[1][1]
    assert head.out_features == 7 and head.bias is None and head.weight.dtype == torch.float64
    assert net(torch.zeros(2, 3, 4, dtype=torch.float64)).shape == (2, 7)


def test_replace_head_explains_bad_arguments():
    with pytest.raises(AttributeError, match="has no submodule 'head'"):
        replace_head(small_resnet(), 5, attr="head")
    net = small_resnet()
    net.fc = nn.Identity()
    with pytest.raises(TypeError, match="is a Identity, not an nn.Linear"):
        replace_head(net, 5)
    with pytest.raises(ValueError, match="positive integer"):
        replace_head(small_resnet(), 0)


def test_strip_head_returns_features():
    net = small_resnet()
    assert head_in_features(net) == 512
    assert strip_head(net) == 512
    assert isinstance(net.fc, nn.Identity)
    assert net.eval()(X).shape == (2, 512)


@pytest.mark.parametrize("make, feature_dim, x", [
    (lambda: torchvision.models.resnet18(weights=None), 512, X),
    (lambda: TinyResNet(num_classes=10, in_channels=3, width=16, depth=1), 16, X),
    (lambda: TinyResNet(num_classes=10, width=8, depth=1), 8, torch.randn(2, 1, 8, 8)),
])
def test_extra_input_works_on_resnets_and_tiny_resnet(make, feature_dim, x):
    model = ResNetWithExtraInput(4, extra_dim=3, backbone=make()).eval()
    assert model.feature_dim == feature_dim
    assert model.head.in_features == feature_dim + 3
    extra = torch.randn(2, 3)
    out = model(x, extra)
    assert out.shape == (2, 4)
    # the head really uses the extra input: changing it changes the logits
    assert not torch.allclose(out, model(x, extra + 1))
    # and the features are the backbone's: logits == head(cat(features, extra))
    manual = model.head(torch.cat([model.features(x), extra], dim=1))
    assert torch.allclose(out, manual)


def test_extra_input_defaults_to_resnet50_and_learns_from_the_extra_columns():
    model = ResNetWithExtraInput(5)
    assert isinstance(model.backbone, torchvision.models.ResNet)
    assert model.feature_dim == 2048 and model.head.in_features == 2049
    assert isinstance(model.backbone.fc, nn.Identity)
    out = model(X, torch.tensor([0.5, 2.0]))  # (batch,) accepted when extra_dim == 1
    out.sum().backward()
    assert model.head.weight.grad[:, 2048:].abs().sum() > 0


def test_extra_input_checks_shapes():
    model = ResNetWithExtraInput(3, extra_dim=2, backbone=small_resnet())
    with pytest.raises(ValueError, match=r"\(batch, extra_dim\) = \(2, 2\), got \(2,\)"):
        model(X, torch.zeros(2))
    with pytest.raises(ValueError, match="extra_dim must be a positive integer"):
        ResNetWithExtraInput(3, extra_dim=0, backbone=small_resnet())


def test_with_features_returns_logits_and_pooled_features():
    backbone = small_resnet(num_classes=6).eval()
    expected = backbone(X)
    model = ResNetWithFeatures(backbone=backbone).eval()  # keeps the trained head
    logits, features = model(X)
    assert torch.allclose(logits, expected, atol=1e-6)
    assert features.shape == (2, 512)
    assert torch.allclose(model.head(features), logits)
    fresh = ResNetWithFeatures(3, backbone=TinyResNet(in_channels=3, width=8, depth=1))
    logits, features = fresh(X)
    assert logits.shape == (2, 3) and features.shape == (2, 8)


def test_backbone_that_does_not_pool_is_reported():
    class NoPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x))

    model = ResNetWithFeatures(2, backbone=NoPool())
    with pytest.raises(RuntimeError, match=r"expected pooled features of shape \(batch, 4\)"):
        model(X)


def test_freeze_unfreeze_and_counts():
    net = small_resnet(num_classes=5)
    total = trainable_parameters(net)
    freeze(net)
    assert trainable_parameters(net) == 0
    unfreeze(net.fc)
    assert trainable_parameters(net) == 512 * 5 + 5
    unfreeze(net.layer4)
    per_child = trainable_by_module(net)
    assert per_child["fc"] == (2565, 2565)
    assert per_child["layer1"][0] == 0 and per_child["layer1"][1] > 0
    assert per_child["layer4"][0] == per_child["layer4"][1]
    assert "relu" not in per_child  # children without parameters are left out
    unfreeze(net)
    assert trainable_parameters(net) == total


def test_set_batchnorm_eval_stops_running_stats():
    net = freeze(small_resnet()).train()
    before = net.bn1.running_mean.clone()
    net(X)
    assert not torch.equal(before, net.bn1.running_mean)  # frozen, yet the stats moved
    assert set_batchnorm_eval(net) == 12  # bn1, 2 per block, 3 downsample
    after = net.bn1.running_mean.clone()
    net(X)
    assert torch.equal(after, net.bn1.running_mean)
    assert net.training and not net.bn1.training


def _moved_statistics(net: nn.Module) -> nn.Module:
    """Train-mode forward passes, so the running statistics are not the fresh zeros and ones."""
    net.train()
    with torch.no_grad():
        for seed in range(3):
            net(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) + seed)
    return net.eval()


def test_convert_frozen_batchnorm_keeps_the_outputs_and_freezes_the_statistics():
    net = _moved_statistics(small_resnet())
    with torch.no_grad():
        before = net(X)
    stats = net.bn1.running_mean.clone()
    assert convert_frozen_batchnorm(net) is net
    kinds = [type(m) for m in net.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
    assert kinds == [FrozenBatchNorm2d] * 12  # bn1, 2 per block, 3 downsample
    assert torch.equal(net.bn1.running_mean, stats)
    net.train()  # FrozenBatchNorm2d has no train mode: the same output, the same statistics
    with torch.no_grad():
        after = net(X)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert torch.equal(net.bn1.running_mean, stats)
    # the weight and bias became buffers: nothing of BatchNorm trains any more
    assert not any("bn" in name or "downsample.1" in name for name, _ in net.named_parameters())


def test_convert_frozen_batchnorm_loads_an_ordinary_checkpoint():
    source = _moved_statistics(small_resnet())
    target = convert_frozen_batchnorm(small_resnet())
    assert target.load_state_dict(source.state_dict())  # num_batches_tracked is dropped
    assert torch.equal(target.layer1[0].bn2.running_var, source.layer1[0].bn2.running_var)
    assert torch.equal(target.layer1[0].bn2.weight, source.layer1[0].bn2.weight)


def test_convert_frozen_batchnorm_single_layer_dtype_and_untracked():
    bn = nn.BatchNorm2d(4, eps=1e-3, affine=False).double()
    bn.running_mean.fill_(0.5)
    frozen = convert_frozen_batchnorm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and frozen.eps == 1e-3
    assert frozen.running_mean.dtype == torch.float64 and frozen.running_mean[0] == 0.5
    assert torch.equal(frozen.weight, torch.ones(4, dtype=torch.float64))
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(frozen(x), bn.eval()(x))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        convert_frozen_batchnorm(nn.Sequential(nn.BatchNorm2d(4, track_running_stats=False)))
    one_d = nn.Sequential(nn.BatchNorm1d(4))
    assert isinstance(convert_frozen_batchnorm(one_d)[0], nn.BatchNorm1d)  # 2d only


def test_param_groups_split_head_and_backbone_and_skip_frozen():
    net = small_resnet(num_classes=5)
    groups = param_groups(net, head_lr=1e-2, backbone_lr=1e-4)
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-2), ("backbone", 1e-4)]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters())  # each exactly once
    opt = torch.optim.SGD(groups, lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-4]
    freeze(net)
    unfreeze(net.fc)
    groups = param_groups(net, head_lr=1e-2, backbone_lr=1e-4)
    assert [g["name"] for g in groups] == ["head"]
    freeze(net)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(net, head_lr=1e-2, backbone_lr=1e-4)


def test_param_groups_with_a_wrapper_head():
    model = ResNetWithExtraInput(3, backbone=small_resnet())
    groups = param_groups(model, head_lr=1.0, backbone_lr=0.5, head="head")
    assert len(groups[0]["params"]) == 2  # head.weight, head.bias


def test_capture_activations_records_and_removes_hooks():
    net = small_resnet().eval()
    with capture_activations(net, ["layer1", "layer4", "avgpool"]) as acts:
        net(X)
    assert [tuple(t.shape) for t in acts["layer1"]] == [(2, 64, 8, 8)]
    assert [tuple(t.shape) for t in acts["layer4"]] == [(2, 512, 1, 1)]
    assert [tuple(t.shape) for t in acts["avgpool"]] == [(2, 512, 1, 1)]
    assert not acts["layer4"][0].requires_grad
    assert all(not m._forward_hooks for m in net.modules())
    with pytest.raises(ValueError, match="boom"):
        with capture_activations(net, ["layer2"]):
            raise ValueError("boom")
    assert all(not m._forward_hooks for m in net.modules())


def test_capture_activations_keeps_every_call_of_a_reused_module():
    net = small_resnet().eval()
    block = net.layer1[0]  # BasicBlock: one relu module, called twice per forward
    with capture_activations(net, ["relu", "layer1.0.relu", "layer1.0.bn2"]) as acts:
        with torch.no_grad():
            net(X)
            net(X[:1])
    assert [t.shape[0] for t in acts["relu"]] == [2, 1]  # the stem's relu: once per forward
    reused = acts["layer1.0.relu"]
    assert [t.shape[0] for t in reused] == [2, 2, 1, 1]  # twice per forward, in call order
    with torch.no_grad():
        block_input = net.maxpool(acts["relu"][0])
        torch.testing.assert_close(reused[0], block.relu(block.bn1(block.conv1(block_input))))
        # the 2nd call is the block's output: relu(bn2(...) + identity)
        torch.testing.assert_close(reused[1], block.relu(acts["layer1.0.bn2"][0] + block_input))
    # without the copy, bn2's stored output is what `out += identity` and the relu made of it
    with capture_activations(net, ["layer1.0.bn2", "layer1.0"], copy=False) as shared:
        with torch.no_grad():
            net(X)
    assert torch.equal(shared["layer1.0.bn2"][0], shared["layer1.0"][0])
    assert not torch.equal(acts["layer1.0.bn2"][0], reused[1])


def test_capture_activations_rejects_unknown_names():
    with pytest.raises(KeyError, match=r"no submodule\(s\) \['layer9'\]"):
        with capture_activations(small_resnet(), ["layer1", "layer9"]):
            pass


def test_load_backbone_weights_loads_all_but_the_head():
    source = small_resnet(num_classes=1000)
    target = small_resnet(num_classes=5)
    report = load_backbone_weights(target, source.state_dict())
    assert report.missing_keys == ["fc.weight", "fc.bias"] and report.unexpected_keys == []
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert target.fc.out_features == 5


def test_load_backbone_weights_loads_nothing_when_it_does_not_fit():
    source = torchvision.models.resnet18(weights=None).state_dict()
    target = small_resnet(num_classes=5)  # resnet18 has more blocks: unexpected keys
    before = target.conv1.weight.clone()
    with pytest.raises(RuntimeError, match="nothing was loaded: 0 missing key"):
        load_backbone_weights(target, source)
    assert torch.equal(target.conv1.weight, before)
    wide = {k: v for k, v in small_resnet().state_dict().items()}
    wide["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    with pytest.raises(RuntimeError, match=r"conv1.weight: checkpoint \[64, 1, 7, 7\]"):
        load_backbone_weights(target, wide)


def test_show_source_prints_the_class(capsys):
    show_source(ResNetWithExtraInput)
    out = capsys.readouterr().out
    assert out.startswith("class ResNetWithExtraInput(nn.Module):")
    assert "torch.cat([features, self._extra(extra, features)], dim=1)" in out
