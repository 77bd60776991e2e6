"""Shared checking code for the chapter checkers: run the learner's object, compare, explain.

Everything here serves one idea: judge an answer by what it *does* on inputs that separate right
from wrong (real digits at several batch sizes, hooks on the blocks, state_dicts with and without
a prefix), and turn any crash of the learner's code into a readable ``ExerciseError``.

>>> out = run_eval(nn.Linear(64, 3), torch.zeros(2, 64), what="the head")
>>> out.shape
torch.Size([2, 3])
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.exercises import ExerciseError, require
from helpers.i18n import _
from helpers.models import count_parameters


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty).

    >>> first_line(ValueError("bad\\nmore"))
    'bad'
    """
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters).

    >>> device_of(nn.Linear(2, 2))
    device(type='cpu')
    """
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode for the block, then restore each module's own flag.

    >>> with eval_mode(net): ...
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


def run_eval(model: nn.Module, *args: Tensor, what: str, **kwargs: Any) -> Any:
    """``model(*args, **kwargs)`` in eval mode without gradients; a crash becomes ExerciseError.

    >>> run_eval(net, X, what="your net").shape
    torch.Size([8, 10])
    """
    try:
        with eval_mode(model), torch.no_grad():
            return model(*args, **kwargs)
    except ExerciseError:
        raise
    except Exception as exc:  # the learner's code may fail in any way: explain, don't crash
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, Tensor))
        text = (_("calling {what} on inputs of shape {shapes} failed with {error}: {message}{hint}")
                if len(args) > 1 else
                _("calling {what} on input of shape {shapes} failed with {error}: {message}{hint}"))
        raise ExerciseError(text.format(what=what, shapes=shapes, error=type(exc).__name__,
                                        message=first_line(exc), hint=shape_hint(exc))) from None


def shape_hint(exc: BaseException) -> str:
    """A hint for the usual shape errors of a forward pass ('' when there is none).

    >>> shape_hint(RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x514 and 512x10)"))
    '. A Linear layer got 514 features per row but expects 512: ...'
    """
    found = re.search(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)",
                      str(exc))
    if found:
        got, want = int(found.group(2)), int(found.group(3))
        return _(". A Linear layer got {got} features per row but expects {want}: build it with "
                 "in_features={got}, the size of what reaches it (or flatten/concatenate before "
                 "it)").format(got=got, want=want)
    if "Sizes of tensors must match except in dimension 0" in str(exc):
        return _(". torch.cat(..., dim=0) stacks along the batch; put the extra numbers next to "
                 "each image's features: torch.cat([features, extra], dim=1)")
    return ""


def require_logits(out: Any, rows: int, num_classes: int, what: str) -> Tensor:
    """Check that ``out`` is a (rows, num_classes) tensor of logits; return it.

    >>> require_logits(torch.zeros(8, 5), 8, 5, "your net").shape
    torch.Size([8, 5])
    """
    if not isinstance(out, Tensor):
        raise ExerciseError(_("{what} returned a {type}, not a tensor of logits").format(
            what=what, type=type(out).__name__))
    expected = (rows, num_classes)
    require(out.ndim == 2, _(
        "{what} returns shape {shape}; expected {expected} (one row of {num_classes} logits per "
        "image). Flatten the features before the last Linear").format(
            what=what, shape=tuple(out.shape), expected=expected, num_classes=num_classes))
    require(out.shape[0] == rows, _(
        "{what} returns {got} rows for a batch of {rows} images; keep the batch dimension").format(
            what=what, got=out.shape[0], rows=rows))
    require(out.shape[1] == num_classes, _(
        "{what} outputs {got} classes; the widget asks for {num_classes}. Use "
        "settings.num_classes for the last layer's size instead of a fixed number").format(
            what=what, got=out.shape[1], num_classes=num_classes))
    return out


@functools.lru_cache(maxsize=8)
def _digits(channels: int, size: int) -> Tensor:
    from helpers.data import load_digits

    return load_digits(10, channels=channels, size=size).test.X


def digits(n: int, *, channels: int = 1, size: int = 8, like: Tensor | None = None) -> Tensor:
    """``n`` real test digits (all rows different), shaped and placed like ``like`` if given.

    >>> digits(4).shape
    torch.Size([4, 1, 8, 8])
    """
    if like is not None:
        channels, size = int(like.shape[1]), int(like.shape[-1])
    X = _digits(channels, size)[:n]
    if like is not None:
        X = X.to(device=like.device, dtype=like.dtype)
    return X


def rows_independent(fn: Callable[[Tensor], Tensor], X: Tensor,
                     sizes: Sequence[int] = (1, 3)) -> int | None:
    """The first row whose result differs when computed in a batch of another size, else None.

    >>> rows_independent(lambda x: x.sum(1), torch.eye(4))
    """
    full = fn(X)
    for size in sizes:
        for start in range(0, min(len(X), 2 * size), size):
            part = fn(X[start:start + size])
            if not torch.allclose(part.float(), full[start:start + size].float(), atol=1e-5):
                return start
    return None


def shared_entries(container: nn.Module) -> list[tuple[int, int]]:
    """Pairs (i, j) of positions in a ModuleList/Sequential that hold the very same module object.

    >>> block = nn.Linear(2, 2); shared_entries(nn.ModuleList([block] * 2))
    [(0, 1)]
    """
    first: dict[int, int] = {}
    pairs = []
    for j, module in enumerate(container._modules.values()):
        i = first.setdefault(id(module), j)
        if i != j:
            pairs.append((i, j))
    return pairs


def hidden_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(attribute path, module) for each module kept only in a plain list, tuple or dict.

    Such modules are invisible to ``parameters()``, ``state_dict()`` and ``.to()``. A module that
    is also registered (``add_module``, or a ModuleList elsewhere) is not hidden.

    >>> class Net(nn.Module):
    ...     def __init__(self): super().__init__(); self.layers = [nn.Linear(2, 2)]
    >>> [path for path, _ in hidden_modules(Net())]
    ['layers[0]']
    """
    registered = {id(m) for m in model.modules()}
    for prefix, module in model.named_modules():
        for attr, value in vars(module).items():
            items: list[tuple[str, object]] = []
            if isinstance(value, (list, tuple)):
                items = [(f"{attr}[{i}]", v) for i, v in enumerate(value)]
            elif isinstance(value, dict) and not attr.startswith("_"):
                items = [(f"{attr}[{k!r}]", v) for k, v in value.items()]
            for path, item in items:
                if isinstance(item, nn.Module) and id(item) not in registered:
                    yield (f"{prefix}.{path}" if prefix else path), item


def hidden_parameter_count(model: nn.Module) -> int:
    """Parameters of the modules ``hidden_modules`` finds (each counted once).

    >>> hidden_parameter_count(BrokenNet(10))  # the blocks kept in a plain list
    960
    """
    hidden = [m for _, m in hidden_modules(model)]
    return count_parameters(nn.ModuleList(hidden)) if hidden else 0


@contextlib.contextmanager
def count_calls(modules: Mapping[str, nn.Module]) -> Iterator[dict[str, int]]:
    """Count the forward calls of each named module while the block runs (forward hooks).

    >>> with count_calls({"fc": net.fc}) as calls: net(X)
    >>> calls["fc"]
    1
    """
    calls = dict.fromkeys(modules, 0)
    handles = []
    for name, module in modules.items():
        def hook(_m: nn.Module, _args: Any, _out: Any, name: str = name) -> None:
            calls[name] += 1
        handles.append(module.register_forward_hook(hook))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def differing(state: Mapping[str, Tensor], reference: Mapping[str, Tensor],
              keys: Sequence[str]) -> list[str]:
    """The keys among ``keys`` whose tensors differ between ``state`` and ``reference``.

    >>> differing({"w": torch.ones(1)}, {"w": torch.zeros(1)}, ["w"])
    ['w']
    """
    return [k for k in keys
            if not torch.equal(state[k].detach().cpu(), reference[k].detach().cpu())]


def buffer_names(model: nn.Module) -> set[str]:
    """State_dict keys of the model's buffers (BatchNorm statistics, counters).

    >>> sorted(buffer_names(nn.BatchNorm1d(2)))
    ['num_batches_tracked', 'running_mean', 'running_var']
    """
    return {name for name, _ in model.named_buffers()}


def same_state(a: Any, b: Any) -> bool:
    """Deep equality of nested state (tensors compared exactly, dicts, lists, plain values).

    >>> same_state({"a": [torch.ones(2)]}, {"a": [torch.ones(2)]})
    True
    """
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and torch.equal(a, b)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@contextlib.contextmanager
def recorded_calls(target: str) -> Iterator[list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Record the arguments of every call to ``target`` (e.g. ``"torch.load"``) in the block.

    The real function still runs. ``unittest.mock.patch`` swaps the attribute, so code that calls
    ``torch.load(...)`` is seen.

    >>> with recorded_calls("torch.load") as calls: resume(path, model, optimizer, scheduler)
    >>> calls[0][1].get("weights_only")
    True
    """
    from unittest import mock

    module_name, attr = target.rsplit(".", 1)
    module = __import__(module_name, fromlist=[attr])
    real = getattr(module, attr)
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    with mock.patch.object(module, attr, spy):
        yield calls


def call_learner(fn: Callable[..., Any], *args: Any, what: str,
                 hint: str | Callable[[BaseException], str] = "", **kwargs: Any) -> Any:
    """Call the learner's function; a crash becomes an ExerciseError that says where.

    ``hint`` is added to the message (a function of the exception, or a fixed text).

    >>> call_learner(len, [1, 2], what="len(...)")
    2
    """
    try:
        return fn(*args, **kwargs)
    except ExerciseError:
        raise
    except Exception as exc:  # the learner's code may fail in any way
        extra = hint(exc) if callable(hint) else hint
        raise ExerciseError(_("calling {what} failed with {error}: {message}{hint}").format(
            what=what, error=type(exc).__name__, message=first_line(exc), hint=extra)) from None


# Files and devices ---------------------------------------------------------------------------

def read_weights_file(path: Path) -> Any:
    """What a careful loader sees: safetensors, or torch.load with weights_only=True.

    >>> read_weights_file(Path("runs/ch3/w.pt"))  # a dict of tensors
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # any failure means the file is not usable
            raise ExerciseError(_("{file} is not a readable safetensors file ({error}: "
                                  "{message})").format(file=path.name, error=type(exc).__name__,
                                                       message=first_line(exc))) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        named = (_("it refers to {name}").format(name=found.group(1)) if found
                 else _("a pickled class"))
        raise ExerciseError(_(
            "{file} holds pickled Python objects ({named}), not only tensors, so "
            "torch.load(weights_only=True) refuses it: you saved the whole model. Save its "
            "weights instead: torch.save(model.module.state_dict(), path)").format(
                file=path.name, named=named)) from None
    except Exception as exc:
        raise ExerciseError(_("{file} cannot be read by torch.load ({error}: {message})").format(
            file=path.name, error=type(exc).__name__, message=first_line(exc))) from None


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same (``cuda`` and ``cuda:0`` alike when 0 is current).

    >>> same_device(torch.device("cpu"), torch.device("cpu"))
    True
    """
    if a.type != b.type:
        return False
    if a.type == "cuda":
        current = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return (a.index if a.index is not None else current) == (
            b.index if b.index is not None else current)
    return True
