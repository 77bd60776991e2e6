"""Checkers for chapter 1, defining models (``notebooks/01_model_definition.ipynb``).

>>> check_named_sequential(None, num_classes=settings.num_classes, batch=X)
[TODO] Build named_net: an nn.Sequential from an OrderedDict with the layers conv, relu, ...
>>> check_named_sequential(net, num_classes=settings.num_classes, batch=X)
[OK] conv -> relu -> pool -> flatten -> fc, output (8, 10) for 8 images, 1 and 3 alike

Each checker prints one line, ``[TODO]``, ``[TRY AGAIN]`` or ``[OK]``, and never raises; the strict
version (raises ``ExerciseError``, returns True) is ``check_x.__wrapped__``. ``solution(n)``
shows the answer to exercise ``n``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from helpers.exercises import ExerciseError, Unanswered, checker, is_scaffold, passed, require
from helpers.exercises import solution_lookup as _solution_lookup
from helpers.exercises.common import (
    count_calls,
    digits,
    eval_mode,
    hidden_modules,
    hidden_parameter_count,
    require_logits,
    run_eval,
    shared_entries,
)
from helpers.exercises.solutions import CH1 as SOLUTIONS
from helpers.i18n import N_, _
from helpers.models import count_parameters

#: Exercise 1: the names (and layer types) the named ``nn.Sequential`` must have, in order.
SEQUENTIAL_LAYERS: tuple[tuple[str, type[nn.Module]], ...] = (
    ("conv", nn.Conv2d),
    ("relu", nn.ReLU),
    ("pool", nn.AdaptiveAvgPool2d),
    ("flatten", nn.Flatten),
    ("fc", nn.Linear),
)


def _unanswered_if_stub(model: object, todo: str) -> None:
    """Raise ``Unanswered`` when the learner's class still has the scaffold's ``forward``."""
    forward = getattr(type(model), "forward", None)
    if forward is not None and is_scaffold(forward):
        raise Unanswered(todo)


TODO_SEQUENTIAL = (N_("Build named_net: an nn.Sequential from an OrderedDict with the layers conv, "
                      "relu, pool, flatten, fc (Conv2d(3, ...), ReLU, AdaptiveAvgPool2d(1), Flatten, "
                      "Linear(..., settings.num_classes)), then run this cell again"))
TODO_BLOCKS = (N_("Write FixedNet: copy BrokenNet and keep self.blocks in an nn.ModuleList, then run "
                  "this cell again"))
TODO_ACTIVATIONS = (N_("Write ActivationNet: an nn.ModuleDict with 'relu', 'gelu', 'tanh', and a "
                       "forward(x, activation='relu') that looks the activation up by name and raises "
                       "ValueError listing the valid names for an unknown one"))
TODO_BUDGET = (N_("Build budget_net = TinyResNet(settings.num_classes, width=..., depth=4) with at most "
                  "12,000 parameters (choose the width, a multiple of 4)"))


def _pool_size(pool: nn.AdaptiveAvgPool2d) -> tuple[int, int]:
    size = pool.output_size
    pair = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    return tuple(int(s) if s is not None else 0 for s in pair)  # type: ignore[return-value]


@checker(todo=TODO_SEQUENTIAL)
def check_named_sequential(net: nn.Module, *, num_classes: int, batch: Tensor) -> bool:
    """Exercise 1: an ``nn.Sequential`` whose layers are named conv, relu, pool, flatten, fc.

    The layers are checked by name and type; then the net runs on real digits, 1, 3 and 8 at a
    time, and each image must get the same logits alone as in a batch.

    >>> check_named_sequential(net, num_classes=10, batch=data.train.X[:8])
    [OK] conv -> relu -> pool -> flatten -> fc, output (8, 10) for 8 images, 1 and 3 alike
    """
    require(isinstance(net, nn.Sequential),
            _("expected an nn.Sequential, got {type}").format(type=type(net).__name__))
    names = [name for name, _ in net.named_children()]
    wanted = [name for name, _ in SEQUENTIAL_LAYERS]
    require(not (names and all(name.isdigit() for name in names)),
            _("your Sequential's layers are named {names}: numbers, not names. Pass one OrderedDict of "
              "(name, layer) pairs: nn.Sequential(OrderedDict([('conv', ...), ('relu', ...), ...]))").format(
                names=names))
    require(names == wanted, _("your layers are named {names}; the exercise asks for {wanted}, in this "
                               "order").format(names=names, wanted=wanted))
    for name, kind in SEQUENTIAL_LAYERS:
        layer = getattr(net, name)
        require(isinstance(layer, kind),
                _("net.{name} is a {type}; it should be an nn.{kind}").format(
                    name=name, type=type(layer).__name__, kind=kind.__name__))
    in_channels = batch.shape[1]
    require(net.conv.in_channels == in_channels,
            _("net.conv expects {expects} input channels, but the images have {in_channels}: "
              "nn.Conv2d({in_channels}, ...)").format(
                expects=net.conv.in_channels, in_channels=in_channels))
    grid = _pool_size(net.pool)
    channels = net.conv.out_channels
    if grid != (1, 1):
        flat = channels * grid[0] * grid[1]
        raise ExerciseError(
            _("net.pool is AdaptiveAvgPool2d({output_size}): it keeps a {rows}x{cols} grid, so "
              "Flatten gives {channels}x{rows}x{cols} = {flat} features per image. The network of "
              "section 2 pools each channel to one number: AdaptiveAvgPool2d(1), and then fc takes "
              "{channels} features (conv's out_channels)").format(
                output_size=net.pool.output_size, rows=grid[0], cols=grid[1], channels=channels,
                flat=flat))
    require(net.fc.in_features == channels,
            _("net.fc takes {in_features} features, but net.conv makes {channels} channels, which "
              "pooling to 1x1 and flattening turn into {channels} features: nn.Linear({channels}, "
              "settings.num_classes)").format(in_features=net.fc.in_features, channels=channels))
    X = digits(8, like=batch)
    out = require_logits(run_eval(net, X, what=_("your Sequential")), len(X), num_classes,
                         _("your Sequential"))
    for size in (1, 3):
        part = run_eval(net, X[:size], what=_("your Sequential"))
        require(torch.allclose(part, out[:size], atol=1e-5),
                _("the first image gets other logits in a batch of {size} than in a batch of {n_X}: a "
                  "layer mixes the images of a batch").format(size=size, n_X=len(X)))
    return passed(_("{wanted}, output {shape} for {n_X} images, 1 and 3 alike").format(
                      wanted=' -> '.join(wanted), shape=tuple(out.shape), n_X=len(X)))


def _blocks_message(model: nn.Module, blocks: nn.Module, pairs: list[tuple[int, int]]) -> str:
    block = list(blocks)[pairs[0][0]]
    copies = len(blocks) - len({id(b) for b in blocks})
    have = count_parameters(model)
    should = have + copies * count_parameters(block)
    return _("model.blocks holds {entries} entries, but entries {first} and {second} are the same "
             "{type} object ([block] * depth repeats one object): the blocks share their weights, "
             "so the net has {have:,} parameters instead of {should:,}. Build a new block each "
             "time: nn.ModuleList([Bottleneck(width, width) for _ in range(depth)])").format(
        entries=len(blocks), first=pairs[0][0], second=pairs[0][1], type=type(block).__name__,
        have=have, should=should)


def _chained_reference(model: nn.Module, blocks: nn.Module, x: Tensor) -> Tensor | None:
    """stem -> every block in order -> head, with the learner's own modules (None if unknown)."""
    stem, head = getattr(model, "stem", None), getattr(model, "head", None)
    if not isinstance(stem, nn.Module) or not isinstance(head, nn.Module):
        return None
    y = stem(x)
    for block in blocks:
        y = block(y)
    return head(y)


@checker(todo=TODO_BLOCKS)
def check_registered_blocks(model: nn.Module, *, expected_blocks: int | None = None) -> bool:
    """Exercise 2: every block is registered, holds its own weights and runs in ``forward``.

    ``model.blocks`` must be an ``nn.ModuleList`` or ``nn.Sequential`` of distinct blocks (a
    block registered with ``add_module`` passes too, with a note); forward hooks check that each
    block runs once per call, and the output must equal stem -> blocks in order -> head. The class
    is also built with ``width=8, depth=2`` to see that it honours its arguments.

    >>> check_registered_blocks(FixedNet(10), expected_blocks=3)
    [OK] 3 blocks, 1,290 trainable parameters, all registered, each runs once per forward
    """
    _unanswered_if_stub(model, TODO_BLOCKS)
    require(isinstance(model, nn.Module) and "_modules" in vars(model),
            _("expected an initialised nn.Module, got {type}; does __init__ call super().__init__() "
              "first?").format(type=type(model).__name__))
    require(hasattr(model, "blocks"), _("your model has no attribute `blocks`; keep the repeated blocks "
                                        "in self.blocks"))
    blocks = model.blocks
    hidden = list(hidden_modules(model))
    registered = count_parameters(model)
    note = ""
    if isinstance(blocks, (list, tuple, dict)):
        entries = list(blocks.values() if isinstance(blocks, dict) else blocks)
        if hidden or not all(isinstance(b, nn.Module) for b in entries):
            kind = _({list: N_("a plain Python list"), tuple: N_("a plain tuple"),
                      dict: N_("a plain dict")}[type(blocks)])
            raise ExerciseError(
                _("your blocks are in {kind}: parameters() does not see them, so it reports "
                  "{registered:,} parameters instead of {total:,}, the optimizer would never update the "
                  "blocks and state_dict() would not save them. Wrap the list in nn.ModuleList([...]) "
                  "(or a dict in nn.ModuleDict)").format(
                    kind=kind, registered=registered, total=registered + hidden_parameter_count(model)))
        note = _(" (they are registered with add_module; nn.ModuleList([...]) is the idiomatic "
                 "form and gives state_dict keys blocks.0, blocks.1, ...)")
        blocks = nn.ModuleList(entries)
    else:
        require(isinstance(blocks, (nn.ModuleList, nn.Sequential)),
                _("model.blocks is a {type}; use nn.ModuleList (or nn.Sequential)").format(
                    type=type(blocks).__name__))
    if hidden:
        paths = ", ".join(path for path, _ in hidden)
        raise ExerciseError(_("these modules sit in plain Python containers and are not registered: "
                              "{paths}. parameters() misses their {hidden:,} "
                              "parameters; use nn.ModuleList or nn.ModuleDict for them too").format(
                                paths=paths, hidden=hidden_parameter_count(model)))
    pairs = shared_entries(blocks)
    if pairs:
        raise ExerciseError(_blocks_message(model, blocks, pairs))
    if expected_blocks is not None:
        require(len(blocks) == expected_blocks,
                _("model.blocks holds {n_blocks} blocks; the exercise asks for {expected_blocks}").format(
                    n_blocks=len(blocks), expected_blocks=expected_blocks))
    in_channels = next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 1)
    X = digits(4, channels=in_channels)
    with count_calls({str(i): b for i, b in enumerate(blocks)}) as calls:
        out = run_eval(model, X, what=_("your model"))
    skipped = [i for i, n in calls.items() if n == 0]
    require(not skipped, _("forward never runs block {skipped} (of {n_blocks}): loop over all of them: "
                           "for block in self.blocks: x = block(x)").format(
                             skipped=', '.join(skipped), n_blocks=len(blocks)))
    twice = [i for i, n in calls.items() if n > 1]
    if twice:
        raise ExerciseError(_("forward runs block {twice} {calls} times per call; run each block once, "
                              "in order").format(twice=twice[0], calls=calls[twice[0]]))
    with torch.no_grad(), eval_mode(model):
        reference = _chained_reference(model, blocks, X)
    if reference is not None and isinstance(out, Tensor) and out.shape == reference.shape:
        require(torch.allclose(out, reference, atol=1e-5),
                _("every block runs, but the output is not stem -> blocks -> head: each block must take "
                  "the previous block's output (x = block(x)), not the stem's"))
    _check_arguments(type(model))
    trainable = count_parameters(model, trainable_only=True)
    return passed(_("{n_blocks} blocks, {trainable:,} trainable parameters, all registered, each runs "
                    "once per forward{note}").format(n_blocks=len(blocks), trainable=trainable, note=note))


def _check_arguments(cls: type) -> None:
    """FixedNet(3, width=8, depth=2) must have 2 blocks of width 8 (the arguments are used)."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to read: nothing to check
        return
    missing = [name for name in ("width", "depth") if name not in params]
    require(not missing, _("FixedNet no longer takes {missing}; keep BrokenNet's constructor: "
                           "__init__(self, num_classes, *, width=16, depth=3)").format(
                             missing=' and '.join(missing)))
    try:
        small = cls(3, width=8, depth=2)
    except Exception:  # another signature than the scaffold's: the checks above suffice
        return
    blocks = getattr(small, "blocks", [])
    require(len(blocks) == 2,
            _("FixedNet(3, width=8, depth=2) has {n_blocks} blocks: build range(depth) blocks, not a "
              "fixed number").format(n_blocks=len(blocks)))
    widths = {m.out_channels for b in blocks for m in b.modules() if isinstance(m, nn.Conv2d)}
    require(8 in widths, _("FixedNet(3, width=8, depth=2) builds blocks of another width ({widths}): "
                           "use Bottleneck(width, width)").format(widths=sorted(widths)))


_ACTIVATIONS = {"relu": torch.relu, "gelu": nn.functional.gelu, "tanh": torch.tanh}
_LAYER_NAMES = {"relu": "nn.ReLU()", "gelu": "nn.GELU()", "tanh": "nn.Tanh()"}


def _activation_dict(net: nn.Module, wanted: list[str]) -> nn.ModuleDict:
    dicts = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.ModuleDict)]
    plain = [path for path, _ in hidden_modules(net)]
    require(not plain, _("these activations sit in a plain Python dict or list: {plain}. Use "
                         "nn.ModuleDict so they are registered (PReLU, say, has parameters)").format(
                           plain=', '.join(plain)))
    require(dicts, _("your net has no nn.ModuleDict; keep the activations in one, keyed by name"))
    found = {name or "net": list(m.keys()) for name, m in dicts}
    right = [m for _, m in dicts if sorted(m.keys()) == sorted(wanted)]
    require(right, _("your ModuleDict keys are {found}; the exercise asks for exactly {wanted}").format(
                       found=found, wanted=wanted))
    acts = right[0]
    probe = torch.linspace(-3, 3, 13)
    for key in wanted:
        function = _ACTIVATIONS.get(key)
        if function is not None:
            with torch.no_grad():
                same = torch.allclose(acts[key](probe), function(probe), atol=1e-4)
            require(same, _("your {key!r} entry computes something else than {key} (it is {type}); map "
                            "{key!r} to {layer}").format(
                              key=key, type=type(acts[key]).__name__, layer=_LAYER_NAMES[key]))
    return acts


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


@checker(todo=TODO_ACTIVATIONS)
def check_activation_net(net: nn.Module, *, keys: Sequence[str], num_classes: int,
                         batch: Tensor) -> bool:
    """Exercise 3: a net that keeps activations in an ``nn.ModuleDict`` and picks one by name.

    ``net(batch, activation=key)`` must equal ``fc(act(hidden(x.flatten(1))))`` for every key, and
    an unknown name must raise ``ValueError`` (not ``KeyError``) whose message lists the valid names.

    >>> check_activation_net(net, keys=["relu", "gelu", "tanh"], num_classes=10, batch=X)
    [OK] activations ['relu', 'gelu', 'tanh'] all work; unknown names are refused
    """
    _unanswered_if_stub(net, TODO_ACTIVATIONS)
    require(isinstance(net, nn.Module) and "_modules" in vars(net),
            _("act_net should be an initialised nn.Module, got {type}; does __init__ call "
              "super().__init__() first?").format(type=type(net).__name__))
    wanted = list(keys)
    acts = _activation_dict(net, wanted)
    X = digits(8, like=batch)
    linears = _linears(net)
    outputs = {}
    for key in wanted:
        out = run_eval(net, X, what=f"net(X, activation={key!r})", activation=key)
        outputs[key] = require_logits(out, len(X), num_classes, f"net(X, activation={key!r})")
    for a, b in zip(wanted, wanted[1:], strict=False):
        require(not torch.equal(outputs[a], outputs[b]),
                _("activation={a!r} and activation={b!r} give identical outputs: forward ignores the "
                  "name. Look the activation up with self.<your ModuleDict>[activation]").format(a=a, b=b))
    if len(linears) == 2 and linears[0].in_features == X[0].numel():
        hidden, fc = linears
        for key in wanted:
            with torch.no_grad():
                want = fc(acts[key](hidden(X.flatten(1))))
            require(torch.allclose(outputs[key], want, atol=1e-5),
                    _("with activation={key!r} your output differs from "
                      "fc({key}(hidden(x.flatten(1)))): apply the activation chosen by name once, "
                      "between the hidden layer and the head").format(key=key))
    unknown = "no_such_activation"
    error: Exception | None = None
    try:
        with torch.no_grad():
            net(X, activation=unknown)
    except Exception as exc:  # judged below, outside the handler, for a clean traceback
        error = exc
    require(error is not None,
            _("net(X, activation={unknown!r}) ran without an error; an unknown name must raise "
              "ValueError listing the valid names, not fall back to another activation").format(
                unknown=unknown))
    assert error is not None
    kind, message = type(error).__name__, str(error)
    wrong_kind = _("an unknown name raises {kind}: {message}; raise a ValueError that lists the valid "
                   "names instead")
    require(isinstance(error, (KeyError, ValueError)), wrong_kind.format(kind=kind, message=message))
    require(all(k in message for k in wanted),
            _("an unknown name raises {kind}({message}), which does not list the valid names. Raise "
              "ValueError(f'unknown activation {{activation!r}}; choose one of {wanted}') so the caller "
              "knows what to pass").format(kind=kind, message=message, wanted=wanted))
    require(isinstance(error, ValueError), wrong_kind.format(kind=kind, message=message))
    return passed(_("activations {wanted} all work; unknown names are refused").format(wanted=wanted))


def _widest_within(num_classes: int, depth: int, budget: int) -> tuple[int, int] | None:
    from helpers.models import TinyResNet

    best = None
    for width in range(4, 257, 4):
        total = count_parameters(TinyResNet(num_classes, width=width, depth=depth))
        if total > budget:
            break
        best = (width, total)
    return best


@checker(todo=TODO_BUDGET)
def check_tiny_resnet(net: nn.Module, *, num_classes: int, depth: int, max_parameters: int,
                      batch: Tensor) -> bool:
    """Exercise 4: a ``TinyResNet`` with ``depth`` blocks and at most ``max_parameters`` parameters.

    >>> check_tiny_resnet(net, num_classes=10, depth=4, max_parameters=12_000, batch=X)
    [OK] 4 blocks of width 48, 11,386 parameters (budget 12,000), output (8, 10)
    """
    from helpers.models import TinyResNet

    require(isinstance(net, TinyResNet),
            _("expected a helpers.models.TinyResNet, got {type}: TinyResNet(settings.num_classes, "
              "width=..., depth={depth})").format(type=type(net).__name__, depth=depth))
    require(len(net.blocks) == depth,
            _("your net has {n_blocks} blocks; the exercise asks for depth={depth}").format(
                n_blocks=len(net.blocks), depth=depth))
    require(net.fc.out_features == num_classes,
            _("your net outputs {out_features} classes; the widget asks for {num_classes}: pass "
              "settings.num_classes as TinyResNet's first argument").format(
                out_features=net.fc.out_features, num_classes=num_classes))
    in_channels = net.stem[0].in_channels
    require(in_channels == batch.shape[1],
            _("your net expects {in_channels}-channel images, the digits have {shape}: leave "
              "in_channels at its default (1)").format(in_channels=in_channels, shape=batch.shape[1]))
    total = count_parameters(net)
    width = net.fc.in_features
    if total > max_parameters:
        fit = _widest_within(num_classes, depth, max_parameters)
        widest = (_("; the widest that fits is width={width} ({total:,} parameters)").format(
            width=fit[0], total=fit[1]) if fit else "")
        raise ExerciseError(_("your net (width {width}) has {total:,} parameters, over the budget of "
                              "{max_parameters:,}. The blocks dominate and grow with width squared: "
                              "choose a smaller width{widest}").format(
                                width=width, total=total, max_parameters=max_parameters, widest=widest))
    X = digits(8, like=batch)
    out = require_logits(run_eval(net, X, what=_("your TinyResNet")), len(X), num_classes,
                         _("your TinyResNet"))
    return passed(_("{depth} blocks of width {width}, {total:,} parameters (budget {max_parameters:,}), "
                    "output {shape}").format(
                      depth=depth, width=width, total=total, max_parameters=max_parameters,
                      shape=tuple(out.shape)))


solution = _solution_lookup(1, SOLUTIONS)
