"""Chapter 4 checkers, exercises 1-3: extend a trained model, predict, resume a run.

>>> check_extended_model(extended, old_model, num_classes=settings.num_classes, example=X)
[OK] head 5 -> 10 outputs; 24 backbone weights equal the trained model's; scores of the 5 ...
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from helpers.checkpoint import save_checkpoint
from helpers.data import ImageData, Split, load_digits
from helpers.exercises import ExerciseError, checker, passed, require
from helpers.exercises.common import (
    buffer_names,
    call_learner,
    device_of,
    differing,
    eval_mode,
    first_line,
)
from helpers.i18n import N_, _
from helpers.models import TinyResNet
from helpers.training import History, fit


@torch.no_grad()
def _eval_logits(model: nn.Module, x: Tensor) -> Tensor:
    with eval_mode(model):
        out = model(x.to(device_of(model)))
    return (out[0] if isinstance(out, (tuple, list)) else out).float().cpu()


# Exercise 1 ------------------------------------------------------------------------------------

TODO_EXTENDED = (N_("Build extended: a TinyResNet for settings.num_classes with old_model's backbone "
                    "(load every tensor except fc.*, strict=False), then copy old_model's head into the "
                    "first old_classes rows of the new head"))


@checker(todo=TODO_EXTENDED)
def check_extended_model(extended: nn.Module, old_model: nn.Module, *, num_classes: int,
                         example: Tensor) -> bool:
    """Exercise 1: ``extended`` predicts ``num_classes`` classes, its backbone is ``old_model``'s,
    and the old classes keep their head rows, so their scores do not change.

    >>> check_extended_model(extended, old_model, num_classes=10, example=data.test.X[:16])
    [OK] head 5 -> 10 outputs; 25 backbone tensors equal the trained model's; ...
    """
    head = getattr(extended, "fc", None)
    old_head = old_model.fc
    require(isinstance(head, nn.Linear),
            (_("extended.fc is a {type}; it should be an nn.Linear (build a TinyResNet for the new "
               "class count)") if head is not None else
             _("extended.fc is missing; it should be an nn.Linear (build a TinyResNet for the new "
               "class count)")).format(type=type(head).__name__))
    require(head.out_features == num_classes,
            _("your head outputs {out_features} classes; the widget asks for {num_classes}. Build the "
              "model with TinyResNet(settings.num_classes, ...)").format(
                out_features=head.out_features, num_classes=num_classes))
    require(head.in_features == old_head.in_features,
            _("your head takes {in_features} features, the trained backbone delivers "
              "{delivered}: build the TinyResNet with the old model's width").format(
                in_features=head.in_features, delivered=old_head.in_features))
    old_state, new_state = old_model.state_dict(), extended.state_dict()
    backbone = [k for k in old_state if not k.startswith("fc.")]
    missing = [k for k in backbone if k not in new_state]
    require(not missing, _("your model has no {key!r}, which the trained model has: build the same "
                           "architecture (TinyResNet, same width and depth)").format(
                             key=missing[0] if missing else ''))
    wrong_shape = [k for k in backbone if new_state[k].shape != old_state[k].shape]
    require(not wrong_shape, _("{key} has another shape than in the trained model: build the "
                               "TinyResNet with the same width and depth").format(
                                 key=wrong_shape[0] if wrong_shape else ''))
    extra = [k for k in new_state if not k.startswith("fc.") and k not in old_state]
    require(not extra, _("your model has {n_extra} backbone tensors the trained model lacks (e.g. "
                         "{key}): another architecture, whose extra layers start random. Build "
                         "TinyResNet(settings.num_classes, **arch)").format(
                           n_extra=len(extra), key=extra[0] if extra else ''))
    buffers = buffer_names(old_model)
    weights = [k for k in backbone if k not in buffers]
    differ = differing(new_state, old_state, weights)
    require(not differ,
            _("{n_differ} of {n_weights} backbone weights differ from the trained model's (e.g. "
              "{key}): the backbone was not loaded. Load every key except fc.* (load_state_dict(..., "
              "strict=False) or load_weights(..., exclude=['fc']))").format(
                n_differ=len(differ), n_weights=len(weights), key=differ[0] if differ else ''))
    old_rows = old_head.out_features
    require(old_rows <= num_classes,
            _("the trained model has {old_rows} classes, more than the {num_classes} asked for").format(
                old_rows=old_rows, num_classes=num_classes))
    weight_ok = torch.equal(head.weight[:old_rows].detach().cpu(), old_head.weight.detach().cpu())
    bias_ok = head.bias is not None and torch.equal(head.bias[:old_rows].detach().cpu(),
                                                    old_head.bias.detach().cpu())
    if weight_ok != bias_ok:
        done, todo = ("weight", "bias") if weight_ok else ("bias", "weight")
        raise ExerciseError(_("the first {old_rows} rows of the head's {done} are copied, but not those "
                              "of its {todo}: extended.fc.{todo}[:{old_rows}] = old_model.fc.{todo} "
                              "(under torch.no_grad())").format(old_rows=old_rows, done=done, todo=todo))
    moved = [i for i in range(old_rows, num_classes)
             if torch.equal(head.weight[i].detach().cpu(), old_head.weight[0].detach().cpu())]
    require(weight_ok,
            _("the first {old_rows} rows of your head differ from the trained head, so the scores of "
              "the digits the model already knows start from scratch{moved}. Copy them (under "
              "torch.no_grad()): extended.fc.weight[:{old_rows}] = old_model.fc.weight, and the same "
              "for the bias").format(old_rows=old_rows, moved=_(
                  " (the old rows went to rows {row}.. instead)").format(row=moved[0]) if moved else ""))
    probe = copy.deepcopy(extended)  # BatchNorm statistics may have moved: compare with the old
    with torch.no_grad():
        probe_state = probe.state_dict()
        for k in backbone:
            if k in buffers:
                probe_state[k].copy_(old_state[k])
    drifted = len(differing(new_state, old_state, [k for k in backbone if k in buffers]))
    try:
        new_logits, old_logits = _eval_logits(probe, example), _eval_logits(old_model, example)
    except Exception as exc:  # the learner's model may fail in any way
        raise ExerciseError(_("calling your model on the example batch failed with {type}: "
                              "{message}").format(type=type(exc).__name__,
                                                  message=first_line(exc))) from None
    require(torch.allclose(new_logits[:, :old_rows], old_logits, atol=1e-5),
            _("on the example batch, the first {old_rows} scores of your model differ from the trained "
              "model's although the weights match: is the model a TinyResNet, with the same "
              "dropout/normalisation layers?").format(old_rows=old_rows))
    note = (_(" ({drifted} BatchNorm statistics moved since: a training-mode forward; fine)").format(
        drifted=drifted) if drifted else "")
    return passed(_("head {old_rows} -> {num_classes} outputs; {n_weights} backbone weights equal the "
                    "trained model's; scores of the {old_rows} known digits unchanged{note}").format(
                      old_rows=old_rows, num_classes=num_classes, n_weights=len(weights), note=note))


# Exercise 2 ------------------------------------------------------------------------------------

TODO_PREDICT = (N_("Write the body of predict_digits(model, X, class_names): eval mode, "
                   "torch.inference_mode(), argmax over the classes, a list of class names"))


@checker(todo=TODO_PREDICT)
def check_predict_function(predict_fn: Callable[[nn.Module, Tensor, Sequence[str]], Any],
                           model: nn.Module, X: Tensor, class_names: Sequence[str]) -> bool:
    """Exercise 2: ``predict_fn(model, X, class_names)`` returns one class name per image,
    computed in eval mode with autograd off.

    The checker puts ``model`` in training mode first, records the mode and the autograd state
    while the model runs, and compares the names with an eval-mode reference.

    >>> check_predict_function(predict_digits, model, data.test.X[:32], data.class_names)
    [OK] 32 names, all correct; eval mode, inference_mode; ...
    """
    names = [str(n) for n in class_names]
    expected = [names[int(i)] for i in _eval_logits(model, X).argmax(1)]
    seen: list[dict[str, bool]] = []

    def record(module: nn.Module, args: Any) -> None:
        seen.append({"training": any(m.training for m in module.modules()),
                     "grad": torch.is_grad_enabled(),
                     "inference": torch.is_inference_mode_enabled()})

    modes = [(m, m.training) for m in model.modules()]
    model.train()
    handle = model.register_forward_pre_hook(record)
    try:
        result = predict_fn(model, X, class_names)
    except Exception as exc:  # the learner's code may fail in any way
        raise ExerciseError(_("calling your function failed with {type}: {message}").format(
                                type=type(exc).__name__, message=first_line(exc))) from None
    finally:
        handle.remove()
        left_in_eval = not model.training
        for module, mode in modes:
            module.training = mode
    require(seen, _("your function never called the model; compute the logits with model(X)"))
    require(not seen[0]["training"],
            _("the model was in training mode while it predicted: BatchNorm then normalises with the "
              "batch's own statistics and dropout drops features at random, so a prediction depends on "
              "the other images in the batch. Call model.eval() first (with the (): model.eval alone "
              "does nothing)"))
    require(not seen[0]["grad"],
            _("autograd was recording while the model predicted: every activation was kept for a "
              "backward pass that never comes. Wrap the call in torch.inference_mode()"))
    if isinstance(result, Tensor):
        raise ExerciseError(_("your function returned a tensor of shape {shape}; return the class "
                              "names: [class_names[i] for i in logits.argmax(1).tolist()]").format(
                                shape=tuple(result.shape)))
    require(isinstance(result, (list, tuple)),
            _("your function returned a {type}; return a list of class names").format(
                type=type(result).__name__))
    across = (_(" (one per class: the argmax ran over dim=0, the batch; take it over dim=1, the "
                "classes)") if len(result) == len(names) else "")
    require(len(result) == len(X),
            _("your function returned {count} names for {images} images{across}; return one per "
              "image").format(count=len(result), images=len(X), across=across))
    numbers = [r for r in result if not isinstance(r, str)]
    require(not numbers,
            _("your function returned {type} values (e.g. {example!r}), not names: look each index "
              "up in class_names").format(type=type(numbers[0]).__name__ if numbers else "",
                                          example=numbers[0] if numbers else ""))
    wrong = [i for i, (got, want) in enumerate(zip(result, expected, strict=True)) if got != want]
    require(not wrong,
            _("{count} of {images} names are wrong (image {image}: {got!r} instead of {want!r}); "
              "take the argmax over the classes (dim=1) and look it up in class_names").format(
                count=len(wrong), images=len(X), image=wrong[0] if wrong else 0,
                got=result[wrong[0]] if wrong else "", want=expected[wrong[0]] if wrong else ""))
    renamed = [f"digit {n}" for n in names]
    with eval_mode(model):
        again = call_learner(predict_fn, model, X, renamed, what=_("your function"))
    require(list(again) == [f"digit {n}" for n in expected],
            _("with class names {renamed}... your function still returns {again}...: it makes names "
              "from the indices instead of looking them up: [class_names[i] for i in "
              "indices.tolist()]").format(renamed=renamed[:2], again=list(again)[:2]))
    how = "inference_mode" if seen[0]["inference"] else "no_grad"
    after = _("left in eval mode") if left_in_eval else _("training mode restored")
    return passed(_("{n_X} names, all correct; eval mode, {how}; model {after}").format(
                      n_X=len(X), how=how, after=after))


# Exercise 3 ------------------------------------------------------------------------------------

_RESUME_EPOCHS, _SAVED_EPOCH, _RESUME_CLASSES = 4, 1, 3


def _resume_data() -> ImageData:
    """A small slice of the digits: 3 batches of fit's default size (64) per epoch."""
    data = load_digits(_RESUME_CLASSES)
    return ImageData(Split(data.train.X[:160], data.train.y[:160]),
                     Split(data.val.X[:48], data.val.y[:48]), data.test, data.class_names)


def _resume_parts(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    torch.manual_seed(seed)
    model = TinyResNet(_RESUME_CLASSES, width=8, depth=1, dropout=0.2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.02,
                                                    total_steps=_RESUME_EPOCHS)
    return model, optimizer, scheduler


TODO_RESUME = (N_("Write the body of resume_training(path, model, optimizer, scheduler, data, epochs): "
                  "load_checkpoint into the fresh objects, then fit from state['start_epoch'] with the "
                  "saved history; return the History"))


@checker(todo=TODO_RESUME)
def check_resume_training(resume_fn: Callable[..., Any]) -> bool:
    """Exercise 3: ``resume_fn(path, model, optimizer, scheduler, data, epochs)`` continues a run
    from its checkpoint to ``epochs`` and returns the full ``History``.

    The checker trains a small TinyResNet for 4 epochs with ``fit`` (its one-cycle schedule steps
    once per epoch, ``fit``'s default ``scheduler_step``), saving a checkpoint (with the
    history among its extras) after epoch 2 (epochs counted from 1). It passes that file, fresh
    objects and the data to ``resume_fn`` and compares the result with the uninterrupted run: the
    same weights, bit for bit, and the same history.

    >>> check_resume_training(resume_training)
    [OK] resumed after epoch 2, trained to epoch 4; weights and history equal the uninterrupted ...
    """
    data = _resume_data()
    saved_rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.pt"
        model, optimizer, scheduler = _resume_parts(seed=0)
        torch.manual_seed(0)

        def save(epoch: int, history: History) -> None:
            if epoch == _SAVED_EPOCH:
                save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler,
                                epoch=epoch, history=history.to_dict())

        reference = fit(model, data, optimizer, epochs=_RESUME_EPOCHS, scheduler=scheduler,
                        callback=save, progress=False)
        reference_state = copy.deepcopy(model.state_dict())
        model, optimizer, scheduler = _resume_parts(seed=1)  # other initial weights
        torch.manual_seed(1)  # other random state: only the checkpoint's may matter
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # a progress bar, if any, stays quiet
                history = resume_fn(path, model, optimizer, scheduler, data, _RESUME_EPOCHS)
        except Exception as exc:  # the learner's code may fail in any way
            hint = ""
            if "Tried to step" in str(exc):
                hint = _(". The one-cycle schedule ran out of steps: it was stepped more often than "
                         "planned. This checker's schedule steps once per epoch, fit's default, so do "
                         "not pass scheduler_step='batch'; and the checkpoint holds epoch {epoch}, "
                         "already finished: start at the next one, start_epoch=state['start_epoch']"
                         ).format(epoch=_SAVED_EPOCH + 1)
            raise ExerciseError(_("calling resume(path, model, optimizer, scheduler, data, epochs) "
                                  "failed with {type}: {message}{hint}").format(
                                    type=type(exc).__name__, message=first_line(exc), hint=hint)) from None
        finally:  # the notebook's random state is left as it was
            torch.set_rng_state(saved_rng[0])
            random.setstate(saved_rng[1])
            np.random.set_state(saved_rng[2])
    require(history is not None, _("your function returned None; return the History that fit returns"))
    require(isinstance(history, History),
            _("your function returned a {type}; return the History that fit returns").format(
                type=type(history).__name__))
    want = list(range(_RESUME_EPOCHS))
    first = history.epoch[0] + 1 if history.epoch else _("(empty)")  # epochs counted from 1
    require(history.epoch[:1] == [0],
            _("the history starts at epoch {first}: the epochs before the checkpoint are missing. Pass "
              "history=History.from_dict(state['history']) to fit, so it continues the saved curves").format(
                first=first))
    require(history.epoch == want,
            _("the history lists the epochs {epochs}, expected {expected}. Start at the epoch after the "
              "saved one: start_epoch=state['start_epoch'] (the checkpoint holds epoch {saved}, "
              "finished)").format(
                epochs=[e + 1 for e in history.epoch], expected=[e + 1 for e in want],
                saved=_SAVED_EPOCH + 1))
    require(scheduler.state_dict()["last_epoch"] == _RESUME_EPOCHS,
            _("the scheduler counted {counted} steps, expected {expected}: it was not restored, "
              "so the learning-rate schedule started over. Pass scheduler=scheduler to load_checkpoint "
              "and to fit").format(
                counted=scheduler.state_dict()['last_epoch'], expected=_RESUME_EPOCHS))
    same = all(torch.equal(v, reference_state[k]) for k, v in model.state_dict().items())
    require(same,
            _("the final weights differ from the uninterrupted run's. Restore everything the checkpoint "
              "holds: load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler) (it "
              "also restores the random state, so the batches come in the same order), then fit(..., "
              "scheduler=scheduler, start_epoch=..., history=...)"))
    require(history.val_acc == reference.val_acc,
            _("the weights match, but the history's validation accuracies do not: return the History "
              "that fit returned"))
    return passed(_("resumed after epoch {saved}, trained to epoch {last}; weights and history "
                    "equal the uninterrupted run's").format(
                      saved=_SAVED_EPOCH + 1, last=_RESUME_EPOCHS))
