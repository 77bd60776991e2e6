"""Checkers for chapter 2, modifying models (``notebooks/02_model_modification.ipynb``).

>>> check_new_head(exercise_net, num_classes=settings.num_classes)  # fc still None
[TODO] Replace None by a new nn.Linear head: exercise_net.fc = nn.Linear(...), in_features ...
>>> check_new_head(net, num_classes=settings.num_classes)
[OK] head Linear(512 -> 10), output (2, 10)

Each checker prints one line, ``[TODO]``, ``[TRY AGAIN]`` or ``[OK]``, and never raises; the strict
version (raises ``ExerciseError``, returns True) is ``check_x.__wrapped__``. ``solution(n)``
shows the answer to exercise ``n``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.exercises import ExerciseError, Unanswered, checker, passed, require, solution_lookup
from helpers.models import count_parameters


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _images(model: nn.Module, batch: int = 2, size: int = 32) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=generator).to(_device(model))


def _call(model: nn.Module, what: str, *args: Tensor) -> Any:
    """Run ``model(*args)`` in eval mode without gradients; a crash becomes an ExerciseError."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*args)
    except Exception as exc:  # the learner's code may fail in any way; explain, don't crash
        shapes = ", ".join(str(tuple(a.shape)) for a in args)
        raise ExerciseError(f"calling {what} on inputs of shape {shapes} failed with "
                            f"{type(exc).__name__}: {exc}") from None
    finally:
        model.train(was_training)


def _classes_message(got: int, num_classes: int) -> str:
    return (f"your head outputs {got} classes; the widget asks for {num_classes}. Build the "
            f"new head with settings.num_classes outputs")


TODO_NEW_HEAD = ("Replace None by a new nn.Linear head: exercise_net.fc = nn.Linear(...), "
                 "in_features read from the old head, settings.num_classes outputs")


@checker(todo=TODO_NEW_HEAD)
def check_new_head(model: nn.Module, *, num_classes: int) -> bool:
    """Exercise 1: ``model.fc`` is a new ``nn.Linear`` that maps the backbone's features to
    ``num_classes`` logits. ``model.fc = None`` (the scaffold) counts as not answered yet.

    >>> check_new_head.__wrapped__(net, num_classes=5)
    [OK] head Linear(512 -> 5), output (2, 5)
    True
    """
    if "fc" in getattr(model, "_modules", {}) and model.fc is None:
        raise Unanswered(TODO_NEW_HEAD)
    head = getattr(model, "fc", None)
    require(isinstance(head, nn.Linear),
            f"model.fc is {'an ' + type(head).__name__ if head is not None else 'missing'}; "
            f"it should be a new nn.Linear")
    seen: dict[str, int] = {}
    hook = head.register_forward_pre_hook(lambda m, args: seen.update(features=args[0].shape[-1]))
    try:
        out = _call(model, "the model", _images(model))
    except ExerciseError:
        if seen.get("features", head.in_features) != head.in_features:
            raise ExerciseError(
                f"your head expects {head.in_features} input features, but the backbone "
                f"delivers {seen['features']}. Read the size from the old head: "
                f"nn.Linear(model.fc.in_features, settings.num_classes)") from None
        raise
    finally:
        hook.remove()
    require(isinstance(out, Tensor) and out.ndim == 2,
            f"the model should return a (batch, classes) tensor of logits; it returned "
            f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
    require(out.shape[-1] == num_classes, _classes_message(out.shape[-1], num_classes))
    return passed(f"head Linear({head.in_features} -> {head.out_features}), output "
                  f"{tuple(out.shape)}")


def _top_names(names: Iterable[str]) -> list[str]:
    """The distinct top-level module names of parameter names, in order."""
    return list(dict.fromkeys(name.split(".")[0] for name in names))


TODO_FROZEN = ("Every parameter still trains: freeze the model, then unfreeze layer4 and fc "
               "(freeze/unfreeze from helpers.modify)")


@checker(todo=TODO_FROZEN)
def check_frozen_except(model: nn.Module, trainable: tuple[str, ...] = ("layer4", "fc")) -> bool:
    """Exercise 2: only the parameters under ``trainable`` (default layer4 and fc) can train.

    A model with nothing frozen at all is the untouched scaffold: not answered yet.

    >>> check_frozen_except.__wrapped__(net)
    [OK] 8,398,858 of 11,181,642 parameters trainable: layer4, fc
    True
    """
    prefixes = tuple(f"{name}." for name in trainable)
    params = list(model.named_parameters())
    for name in trainable:
        require(any(n.startswith(f"{name}.") for n, _ in params),
                f"the model has no parameters under {name!r}; is this the right model?")
    should_train = {n: n.startswith(prefixes) for n, _ in params}
    if not all(should_train.values()) and all(p.requires_grad for _, p in params):
        raise Unanswered(TODO_FROZEN)
    wrongly_trainable = [n for n, p in params if p.requires_grad and not should_train[n]]
    wrongly_frozen = [n for n, p in params if not p.requires_grad and should_train[n]]
    problems = []
    if wrongly_trainable:
        problems.append(f"still trainable but should be frozen: "
                        f"{', '.join(_top_names(wrongly_trainable))} "
                        f"({len(wrongly_trainable)} tensors, e.g. {wrongly_trainable[0]})")
    if wrongly_frozen:
        problems.append(f"frozen but should train: {', '.join(_top_names(wrongly_frozen))} "
                        f"({len(wrongly_frozen)} tensors, e.g. {wrongly_frozen[0]})")
    expected = sum(p.numel() for n, p in params if should_train[n])
    got = count_parameters(model, trainable_only=True)
    require(not problems,
            f"{got:,} parameters are trainable; expected {expected:,} "
            f"({' and '.join(trainable)} only). " + "; ".join(problems))
    return passed(f"{got:,} of {count_parameters(model):,} parameters trainable: "
                  f"{', '.join(trainable)}")


TODO_LOGITS_FEATURES = ("Write __init__ and forward of LogitsFeaturesExtra: a resnet18 backbone "
                        "with fc = nn.Identity(), a head on features + extra, forward returns "
                        "(logits, features)")


@checker(todo=TODO_LOGITS_FEATURES)
def check_logits_and_features(model: nn.Module, *, num_classes: int, extra_dim: int,
                              feature_dim: int | None = None) -> bool:
    """Exercise 3: ``model(x, extra)`` returns ``(logits, features)``, and the logits depend on
    the extra input.

    >>> check_logits_and_features.__wrapped__(model, num_classes=5, extra_dim=2, feature_dim=512)
    [OK] logits (3, 5), features (3, 512); the extra input changes the logits
    True
    """
    require(isinstance(model, nn.Module) and "_modules" in vars(model),
            f"exercise_model should be an initialised nn.Module, got "
            f"{type(model).__name__}; does __init__ call super().__init__() first?")
    x = _images(model, batch=3)
    extra = torch.randn(3, extra_dim, generator=torch.Generator().manual_seed(1)).to(x.device)
    out = _call(model, "model(x, extra)", x, extra)
    kind = (f"a tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor)
            else f"a {type(out).__name__}")
    require(isinstance(out, tuple) and len(out) == 2,
            f"forward returned {kind}; it should return a tuple (logits, features)")
    logits, features = out
    require(isinstance(logits, Tensor) and isinstance(features, Tensor),
            "both items of the returned tuple should be tensors: (logits, features)")
    require(logits.shape == (3, num_classes),
            f"logits have shape {tuple(logits.shape)}; expected (3, {num_classes}): one row of "
            f"{num_classes} logits per image (the widget asks for {num_classes} classes)"
            if logits.ndim == 2 and logits.shape[0] == 3 else
            f"logits have shape {tuple(logits.shape)}; expected (3, {num_classes})")
    require(features.ndim == 2 and features.shape[0] == 3,
            f"features have shape {tuple(features.shape)}; expected a flat (3, feature_dim) "
            f"tensor, the pooled backbone features, one row per image")
    if feature_dim is not None:
        hint = (f" It looks like the extra input ({extra_dim}) was concatenated onto them; "
                f"return the backbone features before the concatenation"
                if features.shape[1] == feature_dim + extra_dim else "")
        require(features.shape[1] == feature_dim,
                f"features have {features.shape[1]} columns; the backbone gives "
                f"{feature_dim}.{hint}")
    logits_moved, _ = _call(model, "model(x, extra)", x, extra + 1.0)
    require(not torch.allclose(logits, logits_moved),
            "changing the extra input does not change the logits: the head never sees it. "
            "Concatenate it with the features (torch.cat(..., dim=1)) before the head")
    return passed(f"logits {tuple(logits.shape)}, features {tuple(features.shape)}; the extra "
                  f"input changes the logits")


TODO_LOADED = ("Build `loaded`: a resnet18 for settings.num_classes classes whose backbone "
               "holds the weights saved in resnet18_path (fix (a) or fix (b) of section 2)")


@checker(todo=TODO_LOADED)
def check_loaded_checkpoint(model: nn.Module, checkpoint: str | Path | Mapping[str, Tensor], *,
                            num_classes: int, head: str = "fc") -> bool:
    """Exercise 4: every backbone tensor equals the checkpoint's, and the head has
    ``num_classes`` outputs.

    ``checkpoint`` is a state_dict or the path of a saved one.

    >>> check_loaded_checkpoint.__wrapped__(model, "runs/ch2/resnet18_1000.pt", num_classes=5)
    [OK] 120 backbone tensors equal the checkpoint; head Linear(512 -> 5)
    True
    """
    require(isinstance(model, nn.Module),
            f"loaded should be the model (an nn.Module), got {type(model).__name__}")
    if isinstance(checkpoint, (str, Path)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    prefix = f"{head}."
    own = model.state_dict()
    backbone = {k: v for k, v in checkpoint.items() if not k.startswith(prefix)}
    absent = [k for k in backbone if k not in own]
    if absent:
        raise ExerciseError(
            f"the model has no {absent[0]!r}, which the checkpoint has ({len(absent)} such "
            f"keys). Load into the same architecture the checkpoint was saved from")
    resized = [k for k, v in backbone.items() if own[k].shape != v.shape]
    if resized:
        raise ExerciseError(
            f"{resized[0]} has shape {list(own[resized[0]].shape)} in your model but "
            f"{list(backbone[resized[0]].shape)} in the checkpoint")
    differ = [k for k, v in backbone.items() if not torch.equal(own[k].cpu(), v.cpu())]
    if differ:
        raise ExerciseError(
            f"{len(differ)} of {len(backbone)} backbone tensors differ from the checkpoint "
            f"(e.g. {differ[0]}): the weights were not loaded. Did load_state_dict raise, or "
            f"did you load into a different model than the one you return?")
    try:
        layer = model.get_submodule(head)
    except AttributeError:
        layer = None
    require(isinstance(layer, nn.Linear), f"model.{head} should be an nn.Linear head")
    require(layer.out_features == num_classes, _classes_message(layer.out_features, num_classes))
    return passed(f"{len(backbone)} backbone tensors equal the checkpoint; head "
                  f"Linear({layer.in_features} -> {layer.out_features})")


# Solutions: each one replaces its exercise cell as a whole (names as in the notebook).
SOLUTIONS = {
    1: """
        exercise_net = resnet18(weights=None).to(settings.device)
        # A new head: the old head's in_features, settings.num_classes outputs, on the device.
        exercise_net.fc = nn.Linear(exercise_net.fc.in_features, settings.num_classes).to(
            settings.device)
        """,
    2: """
        from helpers.modify import freeze, unfreeze

        finetune_net = resnet18(weights=None, num_classes=settings.num_classes)
        finetune_net = finetune_net.to(settings.device)
        freeze(finetune_net)
        for part in (finetune_net.layer4, finetune_net.fc):
            unfreeze(part)
        """,
    3: """
        class LogitsFeaturesExtra(nn.Module):
            def __init__(self, num_classes, extra_dim):
                super().__init__()
                self.backbone = resnet18(weights=None)
                feature_dim = self.backbone.fc.in_features
                self.backbone.fc = nn.Identity()
                self.head = nn.Linear(feature_dim + extra_dim, num_classes)

            def forward(self, x, extra):
                features = self.backbone(x)
                logits = self.head(torch.cat([features, extra], dim=1))
                return logits, features


        extra_dim = 2
        exercise_model = LogitsFeaturesExtra(settings.num_classes, extra_dim).to(settings.device)
        """,
    4: """
        loaded = resnet18(weights=None, num_classes=settings.num_classes).to(settings.device)
        saved = torch.load(resnet18_path, map_location=settings.device, weights_only=True)
        report = loaded.load_state_dict(
            {k: v for k, v in saved.items() if not k.startswith("fc.")}, strict=False)
        assert report.missing_keys == ["fc.weight", "fc.bias"] and not report.unexpected_keys
        """,
}

solution = solution_lookup(2, SOLUTIONS)
