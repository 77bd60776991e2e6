"""Checkers for chapter 1, defining models (``notebooks/01_model_definition.ipynb``).

>>> check_named_sequential(None, num_classes=settings.num_classes, batch=X)
[TODO] Build named_net: an nn.Sequential from an OrderedDict with the layers conv, relu, ...
>>> check_named_sequential(net, num_classes=settings.num_classes, batch=X)
[OK] conv -> relu -> pool -> flatten -> fc, output (8, 10)

Each checker prints one line, ``[TODO]``, ``[TRY AGAIN]`` or ``[OK]``, and never raises; the strict
version (raises ``ExerciseError``, returns True) is ``check_x.__wrapped__``. ``solution(n)``
shows the answer to exercise ``n``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from helpers.exercises import (
    ExerciseError,
    Unanswered,
    checker,
    is_scaffold,
    passed,
    require,
    solution_lookup,
)
from helpers.models import count_parameters

#: Exercise 1: the names (and layer types) the named ``nn.Sequential`` must have, in order.
SEQUENTIAL_LAYERS: tuple[tuple[str, type[nn.Module]], ...] = (
    ("conv", nn.Conv2d),
    ("relu", nn.ReLU),
    ("pool", nn.AdaptiveAvgPool2d),
    ("flatten", nn.Flatten),
    ("fc", nn.Linear),
)


def _run(model: nn.Module, batch: Tensor, what: str, **kwargs: object) -> Tensor:
    """Call ``model(batch, **kwargs)`` in eval mode; turn a crash into a readable ExerciseError."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(batch, **kwargs)
    except Exception as exc:  # the learner's code may fail in any way; explain, don't crash
        raise ExerciseError(f"calling {what} on a batch of shape {tuple(batch.shape)} failed "
                            f"with {type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)
    require(isinstance(out, Tensor),
            f"{what} returned {type(out).__name__}, not a tensor of logits")
    return out


def _check_logits(out: Tensor, batch: Tensor, num_classes: int, what: str) -> None:
    expected = (len(batch), num_classes)
    require(out.ndim == 2,
            f"{what} returns shape {tuple(out.shape)}; expected {expected} (one row of "
            f"{num_classes} logits per image). Did you forget to flatten?")
    require(out.shape[1] == num_classes,
            f"{what} outputs {out.shape[1]} classes; the widget asks for {num_classes}. "
            f"Use settings.num_classes for the last layer's size instead of a fixed number.")
    require(out.shape[0] == len(batch), f"{what} returns {out.shape[0]} rows for a batch of "
                                        f"{len(batch)} images; keep the batch dimension")


def _unanswered_if_stub(model: object, todo: str) -> None:
    """Raise ``Unanswered`` when the learner's class still has the scaffold's ``forward``."""
    forward = getattr(type(model), "forward", None)
    if forward is not None and is_scaffold(forward):
        raise Unanswered(todo)


TODO_SEQUENTIAL = ("Build named_net: an nn.Sequential from an OrderedDict with the layers conv, "
                   "relu, pool, flatten, fc (Conv2d(3, ...), ReLU, AdaptiveAvgPool2d(1), Flatten, "
                   "Linear(..., settings.num_classes)), then run this cell again")
TODO_BLOCKS = ("Write FixedNet: copy BrokenNet and keep self.blocks in an nn.ModuleList, then "
               "run this cell again")
TODO_ACTIVATIONS = ("Write ActivationNet: an nn.ModuleDict with 'relu', 'gelu', 'tanh', and a "
                    "forward(x, activation='relu') that looks the activation up by name and "
                    "raises ValueError listing the valid names for an unknown one")
TODO_BUDGET = ("Build budget_net = TinyResNet(settings.num_classes, width=..., depth=4) with at "
               "most 12,000 parameters (choose the width, a multiple of 4)")


@checker(todo=TODO_SEQUENTIAL)
def check_named_sequential(net: nn.Module, *, num_classes: int, batch: Tensor) -> bool:
    """Exercise 1: an ``nn.Sequential`` whose layers are named conv, relu, pool, flatten, fc.

    >>> check_named_sequential(net, num_classes=10, batch=data.train.X[:8])
    [OK] conv -> relu -> pool -> flatten -> fc, output (8, 10)
    """
    require(isinstance(net, nn.Sequential),
            f"expected an nn.Sequential, got {type(net).__name__}")
    names = [name for name, _ in net.named_children()]
    wanted = [name for name, _ in SEQUENTIAL_LAYERS]
    require(not all(name.isdigit() for name in names),
            f"your Sequential's layers are named {names}: numbers, not names. Pass one "
            f"OrderedDict of (name, layer) pairs: "
            f"nn.Sequential(OrderedDict([('conv', ...), ('relu', ...), ...]))")
    require(names == wanted, f"your layers are named {names}; the exercise asks for {wanted}, "
                             f"in this order")
    for name, kind in SEQUENTIAL_LAYERS:
        layer = getattr(net, name)
        require(isinstance(layer, kind),
                f"net.{name} is a {type(layer).__name__}; it should be an nn.{kind.__name__}")
    in_channels = batch.shape[1]
    require(net.conv.in_channels == in_channels,
            f"net.conv expects {net.conv.in_channels} input channels, but the images have "
            f"{in_channels}")
    require(net.fc.in_features == net.conv.out_channels,
            f"net.fc takes {net.fc.in_features} features, but net.conv makes "
            f"{net.conv.out_channels} channels (after pooling and flattening, that is "
            f"{net.conv.out_channels} features)")
    out = _run(net, batch, "your Sequential")
    _check_logits(out, batch, num_classes, "your Sequential")
    return passed(f"{' -> '.join(wanted)}, output {tuple(out.shape)}")


def _hidden_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(attribute path, module) for every module kept in a plain list, tuple or dict attribute.

    Such modules are invisible to ``parameters()``, ``state_dict()`` and ``.to()``.
    """
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            items: list[tuple[str, object]] = []
            if isinstance(value, (list, tuple)):
                items = [(f"{attr}[{i}]", v) for i, v in enumerate(value)]
            elif isinstance(value, dict) and not attr.startswith("_"):
                items = [(f"{attr}[{k!r}]", v) for k, v in value.items()]
            for path, item in items:
                if isinstance(item, nn.Module):
                    yield (f"{prefix}.{path}" if prefix else path), item


def _container_kind(value: object) -> str:
    return {list: "a plain Python list", tuple: "a plain tuple", dict: "a plain dict"}.get(
        type(value), f"a {type(value).__name__}")


@checker(todo=TODO_BLOCKS)
def check_registered_blocks(model: nn.Module, *, expected_blocks: int | None = None) -> bool:
    """Exercise 2: every block sits in a registered container, so ``parameters()`` sees it.

    ``model.blocks`` must be an ``nn.ModuleList`` (or ``nn.Sequential``), and no module may hide
    in a plain list, tuple or dict anywhere in the model.

    >>> check_registered_blocks(FixedNet(), expected_blocks=3)
    [OK] 3 blocks, 2,340 trainable parameters, all registered
    """
    _unanswered_if_stub(model, TODO_BLOCKS)
    require(hasattr(model, "blocks"), "your model has no attribute `blocks`; keep the repeated "
                                      "blocks in self.blocks")
    blocks = model.blocks
    registered = count_parameters(model)
    hidden = list(_hidden_modules(model))
    hidden_params = count_parameters(nn.ModuleList([m for _, m in hidden])) if hidden else 0
    if isinstance(blocks, (list, tuple, dict)):
        require(False, f"your blocks are in {_container_kind(blocks)}: parameters() does not see "
                       f"them, so it reports {registered:,} parameters instead of "
                       f"{registered + hidden_params:,}, the optimizer would never update the "
                       f"blocks and state_dict() would not save them. Wrap the list in "
                       f"nn.ModuleList([...]) (or a dict in nn.ModuleDict).")
    require(isinstance(blocks, (nn.ModuleList, nn.Sequential)),
            f"model.blocks is a {type(blocks).__name__}; use nn.ModuleList (or nn.Sequential)")
    if hidden:
        paths = ", ".join(path for path, _ in hidden)
        require(False, f"these modules sit in plain Python containers and are not registered: "
                       f"{paths}. parameters() misses their {hidden_params:,} parameters; "
                       f"use nn.ModuleList or nn.ModuleDict for them too.")
    if expected_blocks is not None:
        require(len(blocks) == expected_blocks,
                f"model.blocks holds {len(blocks)} blocks; the exercise asks for {expected_blocks}")
    keys = model.state_dict().keys()
    prefix = next(name for name, m in model.named_children() if m is blocks)
    for i, block in enumerate(blocks):
        if count_parameters(block):
            require(any(k.startswith(f"{prefix}.{i}.") for k in keys),
                    f"state_dict() has no entries for block {i}; is it registered?")
    return passed(f"{len(blocks)} blocks, {count_parameters(model, trainable_only=True):,} "
                  f"trainable parameters, all registered")


@checker(todo=TODO_ACTIVATIONS)
def check_activation_net(net: nn.Module, *, keys: Sequence[str], num_classes: int,
                         batch: Tensor) -> bool:
    """Exercise 3: a net that keeps activations in an ``nn.ModuleDict`` and picks one by name.

    ``net(batch, activation=key)`` must work for every key, each key must change the output, and an
    unknown name must raise ``ValueError`` or ``KeyError`` whose message lists the valid names.

    >>> check_activation_net(net, keys=["relu", "gelu", "tanh"], num_classes=10, batch=X)
    [OK] activations ['relu', 'gelu', 'tanh'] all work; unknown names are refused
    """
    _unanswered_if_stub(net, TODO_ACTIVATIONS)
    dicts = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.ModuleDict)]
    plain = [path for path, _ in _hidden_modules(net)]
    require(not plain, f"these activations sit in a plain Python dict or list: {', '.join(plain)}. "
                       f"Use nn.ModuleDict so they are registered (PReLU, say, has parameters)")
    require(dicts, "your net has no nn.ModuleDict; keep the activations in one, keyed by name")
    wanted = list(keys)
    found = {name or "net": list(m.keys()) for name, m in dicts}
    require(any(sorted(k) == sorted(wanted) for k in found.values()),
            f"your ModuleDict keys are {found}; the exercise asks for exactly {wanted}")
    outputs = {}
    for key in wanted:
        out = _run(net, batch, f"net(X, activation={key!r})", activation=key)
        _check_logits(out, batch, num_classes, f"net(X, activation={key!r})")
        outputs[key] = out
    for a, b in zip(wanted, wanted[1:], strict=False):
        require(not torch.equal(outputs[a], outputs[b]),
                f"activation={a!r} and activation={b!r} give identical outputs: forward ignores "
                f"the name. Look the activation up with self.<your ModuleDict>[activation]")
    unknown = "no_such_activation"
    error: Exception | None = None
    try:
        with torch.no_grad():
            net(batch, activation=unknown)
    except Exception as exc:  # judged below, outside the handler, for a clean traceback
        error = exc
    require(error is not None,
            f"net(X, activation={unknown!r}) ran without an error; an unknown name must raise "
            f"ValueError listing the valid names, not be silently ignored")
    assert error is not None
    kind, message = type(error).__name__, str(error)
    require(isinstance(error, (KeyError, ValueError)),
            f"an unknown name raises {kind}: {message}; raise a ValueError that lists the valid "
            f"names instead")
    require(any(k in message for k in wanted),
            f"an unknown name raises {kind}({message}), which does not say what the valid names "
            f"are. Raise ValueError(f'unknown activation ...; choose one of {wanted}') so the "
            f"caller knows what to pass")
    return passed(f"activations {wanted} all work; unknown names are refused")


@checker(todo=TODO_BUDGET)
def check_tiny_resnet(net: nn.Module, *, num_classes: int, depth: int, max_parameters: int,
                      batch: Tensor) -> bool:
    """Exercise 4: a ``TinyResNet`` with ``depth`` blocks and at most ``max_parameters`` parameters.

    >>> check_tiny_resnet(net, num_classes=10, depth=4, max_parameters=12_000, batch=X)
    [OK] 4 blocks, 11,386 parameters (budget 12,000), output (8, 10)
    """
    from helpers.models import TinyResNet

    require(isinstance(net, TinyResNet),
            f"expected a helpers.models.TinyResNet, got {type(net).__name__}")
    require(len(net.blocks) == depth,
            f"your net has {len(net.blocks)} blocks; the exercise asks for depth={depth}")
    total = count_parameters(net)
    require(total <= max_parameters,
            f"your net has {total:,} parameters, over the budget of {max_parameters:,}. The blocks "
            f"dominate and grow with width squared: try a smaller width (a multiple of 4)")
    out = _run(net, batch, "your TinyResNet")
    _check_logits(out, batch, num_classes, "your TinyResNet")
    return passed(f"{depth} blocks, {total:,} parameters (budget {max_parameters:,}), "
                  f"output {tuple(out.shape)}")


#: The answers, as code to paste into the exercise cells (``solution(n)`` shows one).
SOLUTIONS = {
    1: """
        from collections import OrderedDict

        from torch import nn

        named_net = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(3, 16, 3)),
            ("relu", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(16, settings.num_classes)),
        ])).to(settings.device)
        """,
    2: """
        from torch import nn

        from helpers.models import Bottleneck


        class FixedNet(nn.Module):
            def __init__(self, num_classes, *, width=16, depth=3):
                super().__init__()
                self.stem = nn.Conv2d(1, width, 3, padding=1)
                self.blocks = nn.ModuleList(
                    [Bottleneck(width, width) for _ in range(depth)])
                self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                          nn.Linear(width, num_classes))

            def forward(self, x):
                x = self.stem(x)
                for block in self.blocks:
                    x = block(x)
                return self.head(x)
        """,
    3: """
        from torch import nn


        class ActivationNet(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.hidden = nn.Linear(64, 32)
                self.activations = nn.ModuleDict(
                    {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()})
                self.fc = nn.Linear(32, num_classes)

            def forward(self, x, activation="relu"):
                if activation not in self.activations:
                    raise ValueError(f"unknown activation {activation!r}; "
                                     f"choose one of {list(self.activations)}")
                act = self.activations[activation]
                return self.fc(act(self.hidden(x.flatten(1))))


        act_net = ActivationNet(settings.num_classes).to(settings.device)
        """,
    4: """
        from helpers.models import TinyResNet

        budget_net = TinyResNet(settings.num_classes, width=48, depth=4).to(settings.device)
        """,
}

solution = solution_lookup(1, SOLUTIONS)
