"""Modifying existing models: new heads, extra inputs, extra outputs, freezing, feature capture.

>>> net = replace_head(torchvision.models.resnet18(weights=None), num_classes=5)
>>> net.fc
Linear(in_features=512, out_features=5, bias=True)

The wrappers take any backbone whose head is an ``nn.Linear`` attribute (torchvision ResNets,
``helpers.models.TinyResNet``): they read the feature size from the head's ``in_features``, put
``nn.Identity()`` in its place, so ``backbone(x)`` returns the pooled features, and add a new head.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.ops import FrozenBatchNorm2d

from helpers.i18n import _
from helpers.models import count_parameters


def _linear_head(model: nn.Module, attr: str) -> nn.Linear:
    """The ``nn.Linear`` at ``model.<attr>`` (dotted paths allowed), or a readable error."""
    try:
        head = model.get_submodule(attr)
    except AttributeError:
        children = [name for name, _ in model.named_children()]
        raise AttributeError(_("{type} has no submodule {attr!r}; its children are {children}").format(
                                 type=type(model).__name__, attr=attr, children=children)) from None
    if not isinstance(head, nn.Linear):
        raise TypeError(_("{type}.{attr} is a {head}, not an nn.Linear, so its input size is unknown "
                          "(was the head already replaced by nn.Identity?)").format(
                            type=type(model).__name__, attr=attr, head=type(head).__name__))
    return head


def head_in_features(model: nn.Module, attr: str = "fc") -> int:
    """The number of features the head ``model.<attr>`` receives.

    >>> head_in_features(torchvision.models.resnet50(weights=None))
    2048
    """
    return _linear_head(model, attr).in_features


def replace_head(model: nn.Module, num_classes: int, attr: str = "fc") -> nn.Module:
    """Swap the ``nn.Linear`` head at ``model.<attr>`` for a fresh ``num_classes``-way one.

    The new layer keeps the old one's input size, bias setting, device and dtype. The model is
    changed in place and returned.

    >>> replace_head(torchvision.models.resnet18(weights=None), 5).fc.out_features
    5
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(_("num_classes must be a positive integer, got {num_classes!r}").format(
                             num_classes=num_classes))
    old = _linear_head(model, attr)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    model.set_submodule(attr, new)
    return model


def strip_head(model: nn.Module, attr: str = "fc") -> int:
    """Replace the head ``model.<attr>`` by ``nn.Identity()``; return its ``in_features``.

    Afterwards ``model(x)`` returns the pooled features the head used to receive.

    >>> strip_head(torchvision.models.resnet18(weights=None))
    512
    """
    features = head_in_features(model, attr)
    model.set_submodule(attr, nn.Identity())
    return features


def _default_backbone(backbone: nn.Module | None) -> nn.Module:
    if backbone is not None:
        return backbone
    import torchvision

    return torchvision.models.resnet50(weights=None)


def _pooled(backbone: nn.Module, x: Tensor, feature_dim: int) -> Tensor:
    features = backbone(x)
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[1] != feature_dim:
        shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise RuntimeError(_("the backbone returned {shape}; expected pooled features of shape (batch, "
                             "{feature_dim})").format(shape=shape, feature_dim=feature_dim))
    return features


class ResNetWithExtraInput(nn.Module):
    """A backbone's pooled features, concatenated with an extra input vector, then a new head.

    ``forward(x, extra)``: ``x`` is a batch of images, ``extra`` a ``(batch, extra_dim)`` tensor
    (a ``(batch,)`` tensor is accepted when ``extra_dim == 1``). The head sees
    ``feature_dim + extra_dim`` numbers per image, so it learns from both. ``backbone`` defaults to
    ``torchvision.models.resnet50(weights=None)``; its head ``backbone.<head>`` becomes
    ``nn.Identity()`` (the backbone is changed in place).

    >>> ResNetWithExtraInput(5, extra_dim=3)(torch.zeros(2, 3, 32, 32), torch.zeros(2, 3)).shape
    torch.Size([2, 5])
    """

    def __init__(self, num_classes: int, extra_dim: int = 1, backbone: nn.Module | None = None,
                 *, head: str = "fc") -> None:
        super().__init__()
        if not isinstance(extra_dim, int) or isinstance(extra_dim, bool) or extra_dim < 1:
            raise ValueError(_("extra_dim must be a positive integer, got {extra_dim!r}").format(
                                 extra_dim=extra_dim))
        self.backbone = _default_backbone(backbone)
        self.feature_dim = strip_head(self.backbone, head)
        self.extra_dim = extra_dim
        self.head = nn.Linear(self.feature_dim + extra_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """The backbone's pooled features, shape ``(batch, feature_dim)``."""
        return _pooled(self.backbone, x, self.feature_dim)

    def _extra(self, extra: Tensor, features: Tensor) -> Tensor:
        if extra.ndim == 1 and self.extra_dim == 1:
            extra = extra.unsqueeze(1)
        expected = (features.shape[0], self.extra_dim)
        if tuple(extra.shape) != expected:
            raise ValueError(_("extra must have shape (batch, extra_dim) = {expected}, got {shape}").format(
                                 expected=expected, shape=tuple(extra.shape)))
        return extra.to(features.dtype)

    def forward(self, x: Tensor, extra: Tensor) -> Tensor:
        features = self.features(x)
        return self.head(torch.cat([features, self._extra(extra, features)], dim=1))


class ResNetWithFeatures(nn.Module):
    """A classifier whose ``forward`` returns ``(logits, features)``: the pooled features too.

    ``num_classes=None`` keeps the backbone's own head (a trained classifier then gives the same
    logits as before, plus its features); an integer puts a fresh ``nn.Linear`` there instead.
    ``backbone`` defaults to ``torchvision.models.resnet50(weights=None)``.

    >>> logits, feats = ResNetWithFeatures(5)(torch.zeros(2, 3, 32, 32)); feats.shape
    torch.Size([2, 2048])
    """

    def __init__(self, num_classes: int | None = None, backbone: nn.Module | None = None,
                 *, head: str = "fc") -> None:
        super().__init__()
        self.backbone = _default_backbone(backbone)
        old_head = _linear_head(self.backbone, head)
        self.feature_dim = strip_head(self.backbone, head)
        self.head: nn.Module = (old_head if num_classes is None
                                else nn.Linear(self.feature_dim, num_classes))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = _pooled(self.backbone, x, self.feature_dim)
        return self.head(features), features


def freeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module``; return it.

    >>> trainable_parameters(freeze(nn.Linear(4, 2)))
    0
    """
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=True`` on every parameter of ``module``; return it.

    >>> trainable_parameters(unfreeze(freeze(nn.Linear(4, 2))))
    10
    """
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameter elements with ``requires_grad=True`` (shared tensors counted once).

    >>> trainable_parameters(nn.Linear(4, 2))
    10
    """
    return count_parameters(model, trainable_only=True)


def trainable_by_module(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``{child name: (trainable, total)}`` parameter counts for each direct child of ``model``.

    >>> trainable_by_module(nn.Sequential(nn.Linear(4, 2), freeze(nn.Linear(2, 1))))
    {'0': (10, 10), '1': (0, 3)}
    """
    return {name: (count_parameters(child, trainable_only=True), count_parameters(child))
            for name, child in model.named_children() if count_parameters(child) > 0}


def set_batchnorm_eval(module: nn.Module) -> int:
    """Put every BatchNorm layer in ``module`` in eval mode; return how many there are.

    ``requires_grad=False`` stops the optimizer, not BatchNorm: in train mode its running mean
    and variance still move with every batch. ``model.train()`` undoes this, so call it after
    each ``model.train()``, or swap the layers for ``FrozenBatchNorm2d``
    (``convert_frozen_batchnorm``), which has no train mode.

    >>> set_batchnorm_eval(torchvision.models.resnet18(weights=None).layer1)
    4
    """
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm)]
    for layer in layers:
        layer.eval()
    return len(layers)


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` by ``torchvision.ops.FrozenBatchNorm2d`` with its statistics.

    ``FrozenBatchNorm2d`` normalises with the running mean and variance, weight and bias it was
    given, all buffers: nothing trains and nothing updates, whatever ``model.train()`` says. The
    layers are swapped in place (same device and dtype); the model is returned, or the new layer
    when ``module`` itself is a BatchNorm2d. A state_dict of the original model still loads
    (``num_batches_tracked`` is ignored). Other BatchNorm kinds (1d, 3d, SyncBatchNorm) are left.

    >>> convert_frozen_batchnorm(torchvision.models.resnet18(weights=None)).bn1
    FrozenBatchNorm2d(64, eps=1e-05)
    """
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            raise ValueError(_("{module} has track_running_stats=False: it has no running statistics to "
                               "freeze (it always normalises with the batch's)").format(module=module))
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen = frozen.to(device=module.running_mean.device, dtype=module.running_mean.dtype)
        with torch.no_grad():
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
        return frozen
    for name, child in module.named_children():
        new = convert_frozen_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def param_groups(model: nn.Module, head_lr: float, backbone_lr: float, *,
                 head: str = "fc") -> list[dict[str, Any]]:
    """Optimizer parameter groups: the head at ``head_lr``, the rest at ``backbone_lr``.

    Frozen parameters are left out, and so is a group with nothing left to train. Each group
    carries a ``"name"`` ("head" or "backbone"), which the optimizer keeps in ``param_groups``.

    >>> opt = torch.optim.SGD(param_groups(net, head_lr=1e-2, backbone_lr=1e-4), lr=1e-2)
    >>> [(g["name"], g["lr"]) for g in opt.param_groups]
    [('head', 0.01), ('backbone', 0.0001)]
    """
    head_ids = {id(p) for p in model.get_submodule(head).parameters()}
    trainable = [p for p in dict.fromkeys(model.parameters()) if p.requires_grad]
    groups = [
        {"name": "head", "params": [p for p in trainable if id(p) in head_ids], "lr": head_lr},
        {"name": "backbone", "params": [p for p in trainable if id(p) not in head_ids],
         "lr": backbone_lr},
    ]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError(_("{type} has no trainable parameters: everything is frozen, so an optimizer "
                           "would have nothing to update").format(type=type(model).__name__))
    return groups


@contextmanager
def capture_activations(model: nn.Module, layer_names: Iterable[str], *,
                        detach: bool = True, copy: bool = True) -> Iterator[dict[str, list[Any]]]:
    """Record the outputs of named submodules with forward hooks while the block runs.

    Yields a dict ``{layer name: [output, ...]}`` with one entry per call, in call order: a module
    can run more than once per forward pass (torchvision's ResNet blocks call their one ``relu``
    two or three times), and every forward pass in the block adds its calls. Tensor outputs are
    detached and copied (``detach``, ``copy``): ResNet's blocks change tensors in place after
    they were produced (``out += identity``, ``ReLU(inplace=True)``), so a stored reference would
    show the later values. The hooks are removed on exit, also when the block raises.

    >>> with capture_activations(net, ["layer4", "layer1.0.relu"]) as acts:
    ...     logits = net(x)
    >>> acts["layer4"][0].shape, len(acts["layer1.0.relu"])
    (torch.Size([2, 2048, 1, 1]), 3)
    """
    names = list(dict.fromkeys(layer_names))
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        children = [n for n, _ in model.named_children()]
        raise KeyError(_("{type} has no submodule(s) {unknown}; its children are {children}").format(
                           type=type(model).__name__, unknown=unknown, children=children))
    captured: dict[str, list[Any]] = {name: [] for name in names}

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                output = output.detach() if detach else output
                output = output.clone() if copy else output
            captured[name].append(output)
        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def load_backbone_weights(model: nn.Module, state_dict: Mapping[str, Tensor], *,
                          head: str = "fc") -> Any:
    """Load every tensor of ``state_dict`` except the head's; return the missing/unexpected report.

    The head keys (``head.*``) are dropped and the rest is loaded with ``strict=False``. The keys
    and shapes are checked first: unless the checkpoint fills every non-head tensor of ``model``,
    nothing is loaded and a ``RuntimeError`` names what does not fit.

    >>> load_backbone_weights(replace_head(resnet18(), 5), resnet18().state_dict()).missing_keys
    ['fc.weight', 'fc.bias']
    """
    prefix = f"{head}."
    kept = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}
    missing = [k for k in own if k not in kept]
    unexpected = [k for k in kept if k not in own]
    resized = [_("{key}: checkpoint {saved} vs model {own}").format(
                   key=k, saved=list(v.shape), own=list(own[k].shape))
               for k, v in kept.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or resized:
        raise RuntimeError(_("the checkpoint does not fit this backbone, nothing was loaded: "
                             "{n_missing} missing key(s) {missing}, {n_unexpected} unexpected key(s) "
                             "{unexpected}, {n_resized} size mismatch(es) {resized}").format(
                               n_missing=len(missing), missing=missing[:3], n_unexpected=len(unexpected),
                               unexpected=unexpected[:3], n_resized=len(resized), resized=resized[:3]))
    return model.load_state_dict(kept, strict=False)


def show_source(obj: Any) -> None:
    """Print the source code of a class or function, so a notebook can show it without copying.

    >>> show_source(freeze)  # doctest: +ELLIPSIS
    def freeze(module: nn.Module) -> nn.Module:
    ...
    """
    print(inspect.getsource(obj).rstrip())
