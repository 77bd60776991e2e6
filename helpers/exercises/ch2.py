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

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.exercises import ExerciseError, Unanswered, checker, passed, require, solution_lookup
from helpers.exercises.common import buffer_names, device_of, differing, run_eval
from helpers.exercises.notebook import cell_untouched, last_cell, rerun_cell, user_namespace
from helpers.exercises.solutions import CH2 as SOLUTIONS
from helpers.i18n import N_, _
from helpers.models import count_parameters

#: The untouched exercise 2 cell (comments aside): a learner who ran it has written nothing yet.
SCAFFOLD_FROZEN = """
finetune_net = resnet18(weights=None, num_classes=settings.num_classes)
finetune_net = finetune_net.to(settings.device)
pass
"""

#: The in_features of the unusual old head that exercise 1's cell is re-run with.
ODD_FEATURES = 96


def _images(model: nn.Module, batch: int = 2, size: int = 32) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=generator).to(device_of(model))


def _classes_message(got: int, num_classes: int) -> str:
    return _("your head outputs {got} classes; the widget asks for {num_classes}. Build the "
             "new head with settings.num_classes outputs").format(got=got, num_classes=num_classes)


def _last_linear(head: nn.Module) -> nn.Linear | None:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _name_in_notebook(obj: object) -> str | None:
    """The notebook variable that holds ``obj`` (None outside IPython)."""
    names = [k for k, v in user_namespace().items() if v is obj and not k.startswith("_")]
    return names[0] if names else None


def _odd_resnet18(*args: Any, **kwargs: Any) -> nn.Module:
    """A resnet18 whose old head takes ODD_FEATURES features: a typed-in 512 shows."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=kwargs.get("num_classes", 1000))
    model.fc = nn.Linear(ODD_FEATURES, model.fc.out_features)
    return model


def _typed_in_features(model: nn.Module) -> int | None:
    """Re-run the learner's head cell on a resnet18 whose old head has ODD_FEATURES inputs.

    Returns the in_features the learner's code gave the new head there, when that is not
    ODD_FEATURES (the size was typed in); None when it was read from the old head, or when the
    cell cannot be found or re-run (outside a notebook).
    """
    name = _name_in_notebook(model)
    if name is None:
        return None
    source = last_cell(rf"^\s*{re.escape(name)}\.fc\s*=|replace_head\(\s*{re.escape(name)}\b")
    if source is None:
        return None
    namespace = user_namespace()
    namespace[name] = _odd_resnet18(weights=None)
    scope = rerun_cell(source, namespace, {"torchvision.models.resnet18": _odd_resnet18})
    head = getattr(scope.get(name) if scope else None, "fc", None)
    layer = _last_linear(head) if isinstance(head, nn.Module) else None
    if layer is None or layer.in_features == ODD_FEATURES:
        return None
    return layer.in_features


TODO_NEW_HEAD = (N_("Replace None by a new nn.Linear head: exercise_net.fc = nn.Linear(...), "
                    "in_features read from the old head, settings.num_classes outputs"))


@checker(todo=TODO_NEW_HEAD)
def check_new_head(model: nn.Module, *, num_classes: int) -> bool:
    """Exercise 1: ``model.fc`` is a new head (``nn.Linear``, or a small ``nn.Sequential`` ending
    in one) that maps the backbone's features to ``num_classes`` logits.

    ``model.fc = None`` (the scaffold) counts as not answered yet. In a notebook the checker also
    re-runs the exercise cell on a resnet18 whose old head takes 96 features: a head built with
    ``in_features`` read from the old head follows, a typed-in 512 does not.

    >>> check_new_head.__wrapped__(net, num_classes=5)
    [OK] head Linear(512 -> 5), output (2, 5)
    True
    """
    if "fc" in getattr(model, "_modules", {}) and model.fc is None:
        raise Unanswered(TODO_NEW_HEAD)
    head = getattr(model, "fc", None)
    require(isinstance(head, nn.Module),
            (_("model.fc is a {type}; it should be a new nn.Linear") if head is not None else
             _("model.fc is missing; it should be a new nn.Linear")).format(type=type(head).__name__))
    layer = _last_linear(head)
    kind = type(head).__name__
    require(layer is not None, (_("model.fc is an {kind}; it should be a new nn.Linear head: "
                                  "nn.Linear(in_features, settings.num_classes)") if kind[0] in "AEIOU"
                                else _("model.fc is a {kind}; it should be a new nn.Linear head: "
                                       "nn.Linear(in_features, settings.num_classes)")).format(kind=kind))
    seen: dict[str, int] = {}
    hook = head.register_forward_pre_hook(lambda m, args: seen.update(features=args[0].shape[-1]))
    try:
        out = run_eval(model, _images(model), what=_("the model"))
    except ExerciseError:
        features = seen.get("features")
        if features is not None and isinstance(head, nn.Linear) and features != head.in_features:
            raise ExerciseError(
                _("your head expects {in_features} input features, but the backbone delivers "
                  "{features}. Read the size from the old head: nn.Linear(model.fc.in_features, "
                  "settings.num_classes)").format(in_features=head.in_features, features=features)) from None
        raise
    finally:
        hook.remove()
    require(isinstance(out, Tensor) and out.ndim == 2,
            _("the model should return a (batch, classes) tensor of logits; it returned {got}").format(
                got=tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__))
    require(out.shape[-1] == num_classes, _classes_message(out.shape[-1], num_classes))
    require(not (bool((out >= 0).all()) and torch.allclose(out.sum(1), torch.ones(len(out)))),
            _("your model returns probabilities (every row sums to 1): the head ends in a softmax. "
              "Return logits, the Linear layer's output; nn.CrossEntropyLoss applies the log-softmax "
              "itself"))
    typed = _typed_in_features(model)
    require(typed is None,
            _("the head's size is typed in: on a resnet whose old head takes {features} features, "
              "your cell still builds a head for {typed}. Read it from the old head before replacing "
              "it: nn.Linear(exercise_net.fc.in_features, settings.num_classes) (or "
              "replace_head(exercise_net, settings.num_classes))").format(
                features=ODD_FEATURES, typed=typed))
    linear = f"Linear({layer.in_features} -> {layer.out_features})"
    shape = (linear if head is layer else
             _("{type} ending in {linear}").format(type=type(head).__name__, linear=linear))
    return passed(_("head {shape}, output {output}").format(shape=shape, output=tuple(out.shape)))


def _top_names(names: Iterable[str]) -> list[str]:
    """The distinct top-level module names of parameter names, in order."""
    return list(dict.fromkeys(name.split(".")[0] for name in names))


TODO_FROZEN = (N_("Every parameter still trains: freeze the model, then unfreeze layer4 and fc "
                  "(freeze/unfreeze from helpers.modify)"))


def _nothing_frozen(model: nn.Module, total: int) -> ExerciseError:
    """Why a written answer froze nothing, as far as the model shows it."""
    if "requires_grad" in vars(model):
        why = _("model.requires_grad = False only sets an ordinary attribute on the module; the "
                "parameters keep theirs. Call model.requires_grad_(False) (with the underscore) or "
                "freeze(model)")
    elif not model.training:
        why = _("eval() switches BatchNorm and dropout to inference behaviour; it freezes nothing. "
                "Call freeze(finetune_net) (or requires_grad_(False))")
    else:
        why = _("freeze the whole model first: freeze(finetune_net) or "
                "finetune_net.requires_grad_(False) (torch.no_grad() only affects the code inside "
                "its block, and p.requires_grad == False compares instead of assigning)")
    return ExerciseError(_("nothing is frozen: all {total:,} parameters still train. {why}; then "
                           "unfreeze layer4 and fc").format(total=total, why=why))


@checker(todo=TODO_FROZEN)
def check_frozen_except(model: nn.Module, trainable: tuple[str, ...] = ("layer4", "fc")) -> bool:
    """Exercise 2: only the parameters under ``trainable`` (default layer4 and fc) can train.

    A model with nothing frozen is the untouched scaffold when the exercise cell is unchanged
    (``[TODO]``); once the cell holds code, it is a wrong answer, and the checker says why.

    >>> check_frozen_except.__wrapped__(net)
    [OK] 8,398,858 of 11,181,642 parameters trainable: layer4, fc
    True
    """
    prefixes = tuple(f"{name}." for name in trainable)
    params = list(model.named_parameters())
    for name in trainable:
        require(any(n.startswith(f"{name}.") for n, _ in params),
                _("the model has no parameters under {name!r}; is this the right model?").format(name=name))
    should_train = {n: n.startswith(prefixes) for n, _ in params}
    if not all(should_train.values()) and all(p.requires_grad for _, p in params):
        name = _name_in_notebook(model) or "finetune_net"
        untouched = cell_untouched(rf"^\s*{re.escape(name)}\s*=", SCAFFOLD_FROZEN)
        if untouched is not False and "requires_grad" not in vars(model) and model.training:
            raise Unanswered(TODO_FROZEN)
        raise _nothing_frozen(model, count_parameters(model))
    wrongly_trainable = [n for n, p in params if p.requires_grad and not should_train[n]]
    wrongly_frozen = [n for n, p in params if not p.requires_grad and should_train[n]]
    problems = []
    if wrongly_trainable:
        problems.append(_("still trainable but should be frozen: {names} ({count} tensors, e.g. "
                          "{example})").format(names=", ".join(_top_names(wrongly_trainable)),
                                               count=len(wrongly_trainable),
                                               example=wrongly_trainable[0]))
    if wrongly_frozen:
        problems.append(_("frozen but should train: {names} ({count} tensors, e.g. {example}): "
                          "unfreeze {trainable} after freezing the model").format(
            names=", ".join(_top_names(wrongly_frozen)), count=len(wrongly_frozen),
            example=wrongly_frozen[0], trainable=_(" and ").join(trainable)))
    expected = sum(p.numel() for n, p in params if should_train[n])
    got = count_parameters(model, trainable_only=True)
    require(not problems,
            _("{got:,} parameters are trainable; expected {expected:,} ({trainable} only). "
              "{problems}").format(got=got, expected=expected,
                                   trainable=_(" and ").join(trainable),
                                   problems=_("; ").join(problems)))
    return passed(_("{got:,} of {total:,} parameters trainable: {trainable}").format(
                      got=got, total=count_parameters(model), trainable=", ".join(trainable)))


TODO_LOGITS_FEATURES = (N_("Write __init__ and forward of LogitsFeaturesExtra: a resnet18 backbone with "
                           "fc = nn.Identity(), a head on features + extra, forward returns (logits, "
                           "features)"))


def _pair(out: Any, num_classes: int) -> tuple[Tensor, Tensor]:
    """(logits, features) from what forward returned; explain anything else."""
    kind = (_("a tensor of shape {shape}").format(shape=tuple(out.shape)) if isinstance(out, Tensor)
            else _("a {type}").format(type=type(out).__name__))
    require(isinstance(out, (tuple, list)) and len(out) == 2,
            _("forward returned {kind}; it should return a tuple (logits, features)").format(kind=kind))
    logits, features = out
    require(isinstance(logits, Tensor) and isinstance(features, Tensor),
            _("both items of the returned pair should be tensors: (logits, features)"))
    if (logits.ndim == 2 and features.ndim == 2 and logits.shape[1] != num_classes
            and features.shape[1] == num_classes):
        raise ExerciseError(_("forward returns (features, logits): the first item has {columns} "
                              "columns, the second {num_classes}. Return them in the order (logits, "
                              "features)").format(columns=logits.shape[1], num_classes=num_classes))
    return logits, features


@checker(todo=TODO_LOGITS_FEATURES)
def check_logits_and_features(model: nn.Module, *, num_classes: int, extra_dim: int,
                              feature_dim: int | None = None) -> bool:
    """Exercise 3: ``model(x, extra)`` returns ``(logits, features)`` (a list passes too), the
    features are the pooled backbone features and the logits depend on the image and the extra.

    >>> check_logits_and_features.__wrapped__(model, num_classes=5, extra_dim=2, feature_dim=512)
    [OK] logits (3, 5), features (3, 512); the extra input changes the logits
    True
    """
    require(isinstance(model, nn.Module) and "_modules" in vars(model),
            _("exercise_model should be an initialised nn.Module, got {type}; does __init__ call "
              "super().__init__() first?").format(type=type(model).__name__))
    x = _images(model, batch=3)
    extra = torch.randn(3, extra_dim, generator=torch.Generator().manual_seed(1)).to(x.device)
    logits, features = _pair(run_eval(model, x, extra, what="model(x, extra)"), num_classes)
    require(logits.shape == (3, num_classes),
            _("logits have shape {shape}; expected (3, {num_classes}): one row of {num_classes} logits "
              "per image (the widget asks for {num_classes} classes)").format(
                shape=tuple(logits.shape), num_classes=num_classes))
    require(features.ndim == 2 and features.shape[0] == 3,
            _("features have shape {shape}; expected a flat (3, feature_dim) tensor, the pooled "
              "backbone features, one row per image{hint}").format(
                shape=tuple(features.shape),
                hint=_(": flatten them (features.flatten(1))") if features.ndim == 4 else ""))
    if feature_dim is not None and features.shape[1] != feature_dim:
        if features.shape[1] == feature_dim + extra_dim:
            hint = _(" It looks like the extra input ({extra_dim}) was concatenated onto them; "
                     "return the backbone features before the concatenation").format(
                extra_dim=extra_dim)
        elif features.shape[1] == 1000:
            hint = _(" That is the old ImageNet head's output: read fc.in_features, then set "
                     "backbone.fc = nn.Identity() so the backbone returns the pooled features")
        else:
            hint = ""
        raise ExerciseError(_("features have {columns} columns; the backbone gives "
                              "{feature_dim}.{hint}").format(
                                columns=features.shape[1], feature_dim=feature_dim, hint=hint))
    moved, _features = _pair(run_eval(model, x, extra + 1.0, what="model(x, extra)"), num_classes)
    require(not torch.allclose(logits, moved),
            _("changing the extra input does not change the logits: the head never sees it. Concatenate "
              "it with the features (torch.cat([features, extra], dim=1)) before the head"))
    other, _features = _pair(run_eval(model, x.flip(0), extra, what="model(x, extra)"), num_classes)
    require(not torch.allclose(logits, other),
            _("other images give the same logits: the head ignores the features. Compute the logits "
              "from torch.cat([features, extra], dim=1)"))
    return passed(_("logits {shape}, features {features}; the extra input changes the logits").format(
                      shape=tuple(logits.shape), features=tuple(features.shape)))


TODO_LOADED = (N_("Build `loaded`: a resnet18 for settings.num_classes classes whose backbone holds the "
                  "weights saved in resnet18_path (fix (a) or fix (b) of section 2)"))


@checker(todo=TODO_LOADED)
def check_loaded_checkpoint(model: nn.Module, checkpoint: str | Path | Mapping[str, Tensor], *,
                            num_classes: int, head: str = "fc") -> bool:
    """Exercise 4: every backbone weight equals the checkpoint's, and the model outputs
    ``num_classes`` logits. BatchNorm statistics may have moved (a training-mode forward).

    >>> check_loaded_checkpoint.__wrapped__(model, "runs/ch2/resnet18_1000.pt", num_classes=5)
    [OK] 102 backbone weights equal the checkpoint; head Linear(512 -> 5)
    True
    """
    if type(model).__name__ == "_IncompatibleKeys":
        raise ExerciseError(_("loaded is the report that load_state_dict returns (missing and "
                              "unexpected keys), not the model: call loaded.load_state_dict(...) on its "
                              "own line and keep loaded as the model"))
    require(isinstance(model, nn.Module),
            _("loaded should be the model (an nn.Module), got {type}").format(type=type(model).__name__))
    if isinstance(checkpoint, (str, Path)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    prefix = f"{head}."
    own = model.state_dict()
    backbone = [k for k in checkpoint if not k.startswith(prefix)]
    absent = [k for k in backbone if k not in own]
    if absent:
        raise ExerciseError(
            _("the model has no {absent!r}, which the checkpoint has ({n_absent} such keys). Load into "
              "the same architecture the checkpoint was saved from (resnet18)").format(
                absent=absent[0], n_absent=len(absent)))
    resized = [k for k in backbone if own[k].shape != checkpoint[k].shape]
    if resized:
        raise ExerciseError(
            _("{key} has shape {own} in your model but {saved} in the checkpoint").format(
                key=resized[0], own=list(own[resized[0]].shape),
                saved=list(checkpoint[resized[0]].shape)))
    extra = [k for k in own if not k.startswith(prefix) and k not in checkpoint]
    require(not extra, _("your model has {n_extra} backbone tensors the checkpoint lacks (e.g. "
                         "{example}): another architecture, whose extra layers keep random weights. Build "
                         "a resnet18, like the saved one").format(
                           n_extra=len(extra), example=extra[0] if extra else ''))
    buffers = buffer_names(model)
    weights = [k for k in backbone if k not in buffers]
    differ = differing(own, checkpoint, weights)
    if differ:
        raise ExerciseError(
            _("{n_differ} of {n_weights} backbone weights differ from the checkpoint (e.g. {differ}): "
              "the weights were not loaded into this model. Load them (strict=False after dropping the "
              "fc.* keys, or into a 1000-class resnet18 whose head you then replace), and keep `loaded` "
              "as the model you loaded into").format(
                n_differ=len(differ), n_weights=len(weights), differ=differ[0]))
    out = run_eval(model, _images(model), what="loaded")
    require(isinstance(out, Tensor) and out.ndim == 2,
            _("loaded should return a (batch, classes) tensor; it returned {got}").format(
                got=tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__))
    require(out.shape[1] == num_classes, _classes_message(out.shape[1], num_classes))
    layer = _last_linear(model.get_submodule(head)) if hasattr(model, head) else None
    shape = f"Linear({layer.in_features} -> {layer.out_features})" if layer else _("a new head")
    return passed(_("{n_weights} backbone weights equal the checkpoint; head {shape}").format(
                      n_weights=len(weights), shape=shape))


solution = solution_lookup(2, SOLUTIONS)
