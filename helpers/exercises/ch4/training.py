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
from helpers.models import TinyResNet
from helpers.training import History, fit


@torch.no_grad()
def _eval_logits(model: nn.Module, x: Tensor) -> Tensor:
    with eval_mode(model):
        out = model(x.to(device_of(model)))
    return (out[0] if isinstance(out, (tuple, list)) else out).float().cpu()


# Exercise 1 ------------------------------------------------------------------------------------

TODO_EXTENDED = ("Build extended: a TinyResNet for settings.num_classes with old_model's backbone "
                 "(load every tensor except fc.*, strict=False), then copy old_model's head into "
                 "the first old_classes rows of the new head")


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
            f"extended.fc is {'a ' + type(head).__name__ if head is not None else 'missing'}; "
            f"it should be an nn.Linear (build a TinyResNet for the new class count)")
    require(head.out_features == num_classes,
            f"your head outputs {head.out_features} classes; the widget asks for {num_classes}. "
            f"Build the model with TinyResNet(settings.num_classes, ...)")
    require(head.in_features == old_head.in_features,
            f"your head takes {head.in_features} features, the trained backbone delivers "
            f"{old_head.in_features}: build the TinyResNet with the old model's width")
    old_state, new_state = old_model.state_dict(), extended.state_dict()
    backbone = [k for k in old_state if not k.startswith("fc.")]
    missing = [k for k in backbone if k not in new_state]
    require(not missing, f"your model has no {missing[0] if missing else ''!r}, which the trained "
                         f"model has: build the same architecture (TinyResNet, same width and "
                         f"depth)")
    wrong_shape = [k for k in backbone if new_state[k].shape != old_state[k].shape]
    require(not wrong_shape, f"{wrong_shape[0] if wrong_shape else ''} has another shape than in "
                             f"the trained model: build the TinyResNet with the same width and "
                             f"depth")
    extra = [k for k in new_state if not k.startswith("fc.") and k not in old_state]
    require(not extra, f"your model has {len(extra)} backbone tensors the trained model lacks "
                       f"(e.g. {extra[0] if extra else ''}): another architecture, whose extra "
                       f"layers start random. Build TinyResNet(settings.num_classes, **arch)")
    buffers = buffer_names(old_model)
    weights = [k for k in backbone if k not in buffers]
    differ = differing(new_state, old_state, weights)
    require(not differ,
            f"{len(differ)} of {len(weights)} backbone weights differ from the trained model's "
            f"(e.g. {differ[0] if differ else ''}): the backbone was not loaded. Load every key "
            f"except fc.* (load_state_dict(..., strict=False) or load_weights(..., "
            f"exclude=['fc']))")
    old_rows = old_head.out_features
    require(old_rows <= num_classes,
            f"the trained model has {old_rows} classes, more than the {num_classes} asked for")
    weight_ok = torch.equal(head.weight[:old_rows].detach().cpu(), old_head.weight.detach().cpu())
    bias_ok = head.bias is not None and torch.equal(head.bias[:old_rows].detach().cpu(),
                                                    old_head.bias.detach().cpu())
    if weight_ok != bias_ok:
        done, todo = ("weight", "bias") if weight_ok else ("bias", "weight")
        raise ExerciseError(f"the first {old_rows} rows of the head's {done} are copied, but "
                            f"not those of its {todo}: extended.fc.{todo}[:{old_rows}] = "
                            f"old_model.fc.{todo} (under torch.no_grad())")
    moved = [i for i in range(old_rows, num_classes)
             if torch.equal(head.weight[i].detach().cpu(), old_head.weight[0].detach().cpu())]
    require(weight_ok,
            f"the first {old_rows} rows of your head differ from the trained head, so the scores of "
            f"the digits the model already knows start from scratch"
            + (f" (the old rows went to rows {moved[0]}.. instead)" if moved else "")
            + f". Copy them (under torch.no_grad()): extended.fc.weight[:{old_rows}] = "
              f"old_model.fc.weight, and the same for the bias")
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
        raise ExerciseError(f"calling your model on the example batch failed with "
                            f"{type(exc).__name__}: {first_line(exc)}") from None
    require(torch.allclose(new_logits[:, :old_rows], old_logits, atol=1e-5),
            f"on the example batch, the first {old_rows} scores of your model differ from the "
            f"trained model's although the weights match: is the model a TinyResNet, with the "
            f"same dropout/normalisation layers?")
    note = (f" ({drifted} BatchNorm statistics moved since: a training-mode forward; fine)"
            if drifted else "")
    return passed(f"head {old_rows} -> {num_classes} outputs; {len(weights)} backbone weights "
                  f"equal the trained model's; scores of the {old_rows} known digits "
                  f"unchanged{note}")


# Exercise 2 ------------------------------------------------------------------------------------

TODO_PREDICT = ("Write the body of predict_digits(model, X, class_names): eval mode, "
                "torch.inference_mode(), argmax over the classes, a list of class names")


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
        raise ExerciseError(f"calling your function failed with {type(exc).__name__}: "
                            f"{first_line(exc)}") from None
    finally:
        handle.remove()
        left_in_eval = not model.training
        for module, mode in modes:
            module.training = mode
    require(seen, "your function never called the model; compute the logits with model(X)")
    require(not seen[0]["training"],
            "the model was in training mode while it predicted: BatchNorm then normalises with "
            "the batch's own statistics and dropout drops features at random, so a prediction "
            "depends on the other images in the batch. Call model.eval() first (with the (): model.eval "
            "alone does nothing)")
    require(not seen[0]["grad"],
            "autograd was recording while the model predicted: every activation was kept for a "
            "backward pass that never comes. Wrap the call in torch.inference_mode()")
    if isinstance(result, Tensor):
        raise ExerciseError(f"your function returned a tensor of shape {tuple(result.shape)}; "
                            f"return the class names: [class_names[i] for i in "
                            f"logits.argmax(1).tolist()]")
    require(isinstance(result, (list, tuple)),
            f"your function returned a {type(result).__name__}; return a list of class names")
    across = (" (one per class: the argmax ran over dim=0, the batch; take it over dim=1, the "
              "classes)" if len(result) == len(names) else "")
    require(len(result) == len(X),
            f"your function returned {len(result)} names for {len(X)} images{across}; return one "
            f"per image")
    numbers = [r for r in result if not isinstance(r, str)]
    require(not numbers,
            f"your function returned {type(numbers[0]).__name__ if numbers else ''} values (e.g. "
            f"{numbers[0] if numbers else ''!r}), not names: look each index up in class_names")
    wrong = [i for i, (got, want) in enumerate(zip(result, expected, strict=True)) if got != want]
    require(not wrong,
            f"{len(wrong)} of {len(X)} names are wrong (image {wrong[0] if wrong else 0}: "
            f"{result[wrong[0]] if wrong else ''!r} instead of "
            f"{expected[wrong[0]] if wrong else ''!r}); take the argmax over the classes "
            f"(dim=1) and look it up in class_names")
    renamed = [f"digit {n}" for n in names]
    with eval_mode(model):
        again = call_learner(predict_fn, model, X, renamed, what="your function")
    require(list(again) == [f"digit {n}" for n in expected],
            f"with class names {renamed[:2]}... your function still returns {list(again)[:2]}...: "
            f"it makes names from the indices instead of looking them up: "
            f"[class_names[i] for i in indices.tolist()]")
    how = "inference_mode" if seen[0]["inference"] else "no_grad"
    after = "left in eval mode" if left_in_eval else "training mode restored"
    return passed(f"{len(X)} names, all correct; eval mode, {how}; model {after}")


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


TODO_RESUME = ("Write the body of resume_training(path, model, optimizer, scheduler, data, epochs): "
               "load_checkpoint into the fresh objects, then fit from state['start_epoch'] with "
               "the saved history; return the History")


@checker(todo=TODO_RESUME)
def check_resume_training(resume_fn: Callable[..., Any]) -> bool:
    """Exercise 3: ``resume_fn(path, model, optimizer, scheduler, data, epochs)`` continues a run
    from its checkpoint to ``epochs`` and returns the full ``History``.

    The checker trains a small TinyResNet for 4 epochs with ``fit``, saving a checkpoint (with the
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
                hint = (f". The one-cycle schedule ran out of steps: more epochs were trained than "
                        f"planned. The checkpoint holds epoch {_SAVED_EPOCH + 1}, already finished; "
                        f"start at the next one, start_epoch=state['start_epoch']")
            raise ExerciseError(f"calling resume(path, model, optimizer, scheduler, data, epochs) "
                                f"failed with {type(exc).__name__}: {first_line(exc)}"
                                f"{hint}") from None
        finally:  # the notebook's random state is left as it was
            torch.set_rng_state(saved_rng[0])
            random.setstate(saved_rng[1])
            np.random.set_state(saved_rng[2])
    require(history is not None, "your function returned None; return the History that fit returns")
    require(isinstance(history, History),
            f"your function returned a {type(history).__name__}; return the History that fit "
            f"returns")
    want = list(range(_RESUME_EPOCHS))
    first = history.epoch[0] + 1 if history.epoch else "(empty)"  # epochs counted from 1
    require(history.epoch[:1] == [0],
            f"the history starts at epoch {first}: the "
            f"epochs before the checkpoint are missing. Pass history=History.from_dict("
            f"state['history']) to fit, so it continues the saved curves")
    require(history.epoch == want,
            f"the history lists the epochs {[e + 1 for e in history.epoch]}, expected "
            f"{[e + 1 for e in want]}. Start at the epoch after the saved one: "
            f"start_epoch=state['start_epoch'] (the checkpoint holds epoch {_SAVED_EPOCH + 1}, "
            f"finished)")
    require(scheduler.state_dict()["last_epoch"] == _RESUME_EPOCHS,
            f"the scheduler counted {scheduler.state_dict()['last_epoch']} steps, expected "
            f"{_RESUME_EPOCHS}: it was not restored, so the learning-rate schedule started over. "
            f"Pass scheduler=scheduler to load_checkpoint and to fit")
    same = all(torch.equal(v, reference_state[k]) for k, v in model.state_dict().items())
    require(same,
            "the final weights differ from the uninterrupted run's. Restore everything the "
            "checkpoint holds: load_checkpoint(path, model=model, optimizer=optimizer, "
            "scheduler=scheduler) (it also restores the random state, so the batches come in "
            "the same order), then fit(..., scheduler=scheduler, start_epoch=..., history=...)")
    require(history.val_acc == reference.val_acc,
            "the weights match, but the history's validation accuracies do not: return the "
            "History that fit returned")
    return passed(f"resumed after epoch {_SAVED_EPOCH + 1}, trained to epoch {_RESUME_EPOCHS}; "
                  f"weights and history equal the uninterrupted run's")
