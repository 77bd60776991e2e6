"""Checkers for chapter 4, the full pipeline (``notebooks/04_full_pipeline.ipynb``).

>>> check_extended_model(None, old_model, num_classes=settings.num_classes, example=X)
[TODO] Build extended: a TinyResNet for settings.num_classes with old_model's backbone ...
>>> check_extended_model(extended, old_model, num_classes=settings.num_classes, example=X)
[OK] head 5 -> 10 outputs; 24 backbone tensors equal the trained model's; scores of the 5 ...

Each checker prints one line, ``[TODO]``, ``[TRY AGAIN]`` or ``[OK]``, and never raises; the strict
version (raises ``ExerciseError``, returns True) is ``check_x.__wrapped__``. ``solution(n)``
shows the answer to exercise ``n``.
"""

from __future__ import annotations

import contextlib
import copy
import io
import random
import shlex
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from helpers.checkpoint import save_checkpoint
from helpers.data import ImageData, Split, load_digits
from helpers.exercises import ExerciseError, checker, passed, require, solution_lookup
from helpers.models import TinyResNet
from helpers.training import History, fit


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.no_grad()
def _eval_logits(model: nn.Module, x: Tensor) -> Tensor:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        out = model(x.to(_device(model)))
    finally:
        for module, mode in modes:
            module.training = mode
    return (out[0] if isinstance(out, tuple) else out).float().cpu()


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
    differ = [k for k in backbone
              if not torch.equal(new_state[k].detach().cpu(), old_state[k].detach().cpu())]
    require(not differ,
            f"{len(differ)} of {len(backbone)} backbone tensors differ from the trained model's "
            f"(e.g. {differ[0] if differ else ''}): the backbone was not loaded. Load every key "
            f"except fc.* (load_state_dict(..., strict=False) or load_weights(..., "
            f"exclude=['fc']))")
    old_rows = old_head.out_features
    require(old_rows <= num_classes,
            f"the trained model has {old_rows} classes, more than the {num_classes} asked for")
    rows_equal = (torch.equal(head.weight[:old_rows].detach().cpu(), old_head.weight.detach().cpu())
                  and torch.equal(head.bias[:old_rows].detach().cpu(), old_head.bias.detach().cpu()))
    require(rows_equal,
            f"the first {old_rows} rows of your head differ from the trained head, so the scores of "
            f"the digits the model already knows start from scratch. Copy them (under "
            f"torch.no_grad()): extended.fc.weight[:{old_rows}] = old_model.fc.weight, and the "
            f"same for the bias")
    try:
        new_logits, old_logits = _eval_logits(extended, example), _eval_logits(old_model, example)
    except Exception as exc:  # the learner's model may fail in any way
        raise ExerciseError(f"calling your model on the example batch failed with "
                            f"{type(exc).__name__}: {_first_line(exc)}") from None
    require(torch.allclose(new_logits[:, :old_rows], old_logits, atol=1e-5),
            f"on the example batch, the first {old_rows} scores of your model differ from the "
            f"trained model's although the weights match: is the model a TinyResNet, with the "
            f"same dropout/normalisation layers?")
    return passed(f"head {old_rows} -> {num_classes} outputs; {len(backbone)} backbone tensors "
                  f"equal the trained model's; scores of the {old_rows} known digits unchanged")


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
                            f"{_first_line(exc)}") from None
    finally:
        handle.remove()
        left_in_eval = not model.training
        for module, mode in modes:
            module.training = mode
    require(seen, "your function never called the model; compute the logits with model(X)")
    require(not seen[0]["training"],
            "the model was in training mode while it predicted: BatchNorm then normalises with "
            "the batch's own statistics and dropout drops features at random, so a prediction "
            "depends on the other images in the batch. Call model.eval() first")
    require(not seen[0]["grad"],
            "autograd was recording while the model predicted: every activation was kept for a "
            "backward pass that never comes. Wrap the call in torch.inference_mode()")
    if isinstance(result, Tensor):
        raise ExerciseError(f"your function returned a tensor of shape {tuple(result.shape)}; "
                            f"return the class names: [class_names[i] for i in "
                            f"logits.argmax(1).tolist()]")
    require(isinstance(result, (list, tuple)),
            f"your function returned a {type(result).__name__}; return a list of class names")
    require(len(result) == len(X),
            f"your function returned {len(result)} names for {len(X)} images; return one per image")
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
                                f"failed with {type(exc).__name__}: {_first_line(exc)}"
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


# Exercise 4 ------------------------------------------------------------------------------------


def _torchrun_argv(command: str | Sequence[str]) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    require(argv, "the command is empty")
    head = Path(argv[0]).name
    if head == "torchrun":
        return argv[1:]
    if head.startswith("python") and argv[1:3] == ["-m", "torch.distributed.run"]:
        return argv[3:]
    raise ExerciseError(f"the command starts with {argv[0]!r}; start it with torchrun (or "
                        f"python -m torch.distributed.run), which launches the processes")


TODO_TORCHRUN = ("Write command: a string that starts helpers.pipeline under torchrun in 4 CPU "
                 "processes on this machine, for settings.num_classes digits, 5 epochs, "
                 "checkpoints in runs/ch4/ex4")


@checker(todo=TODO_TORCHRUN)
def check_torchrun_command(command: str | Sequence[str], *, processes: int, num_classes: int,
                           epochs: int, checkpoint_dir: str) -> bool:
    """Exercise 4: a torchrun command line that runs ``helpers.pipeline`` in ``processes`` CPU
    processes on one machine. It is parsed with torchrun's and the pipeline's own parsers, not run.

    >>> check_torchrun_command("torchrun --standalone --nproc-per-node=4 -m helpers.pipeline "
    ...                        "--device cpu --num-classes 10 --epochs 5 --checkpoint-dir runs/x",
    ...                        processes=4, num_classes=10, epochs=5, checkpoint_dir="runs/x")
    [OK] torchrun starts 4 processes on this machine; each runs helpers.pipeline on the CPU ...
    """
    from torch.distributed.run import get_args_parser

    from helpers.pipeline import build_parser

    argv = _torchrun_argv(command)
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            launcher = get_args_parser().parse_args(argv)
    except SystemExit:
        problem = errors.getvalue().strip().splitlines()
        raise ExerciseError(f"torchrun would refuse these arguments: "
                            f"{problem[-1] if problem else argv}") from None
    require(launcher.module and launcher.training_script == "helpers.pipeline",
            f"torchrun would run {launcher.training_script!r}"
            f"{' as a module' if launcher.module else ' as a script file'}; run the module: "
            f"-m helpers.pipeline (torchrun's options go before it, the script's after it)")
    require(launcher.nproc_per_node == str(processes),
            f"--nproc-per-node is {launcher.nproc_per_node}; the exercise asks for {processes} "
            f"processes")
    require(launcher.standalone or launcher.nnodes in ("1", "1:1"),
            f"--nnodes={launcher.nnodes} waits for other machines; for one machine add "
            f"--standalone")
    pipeline_errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(pipeline_errors):
            args = build_parser().parse_args(launcher.training_script_args)
    except SystemExit:
        problem = pipeline_errors.getvalue().strip().splitlines()
        raise ExerciseError(f"helpers.pipeline would refuse its arguments "
                            f"{launcher.training_script_args}: "
                            f"{problem[-1] if problem else ''}") from None
    require(str(args.device).lower() == "cpu",
            f"--device is {args.device!r}: with auto, each process looks for a GPU of its own "
            f"(cuda:LOCAL_RANK). On a CPU-only run pass --device cpu (gloo)")
    require(str(args.num_classes) == str(num_classes),
            f"--num-classes is {args.num_classes}; the widget asks for {num_classes}")
    require(args.epochs == epochs, f"--epochs is {args.epochs}; the exercise asks for {epochs}")
    require(Path(args.checkpoint_dir) == Path(checkpoint_dir),
            f"--checkpoint-dir is {args.checkpoint_dir.as_posix()}; the exercise asks for "
            f"{checkpoint_dir}")
    require(not args.resume, "--resume continues an earlier run; this one starts from scratch")
    return passed(f"torchrun starts {processes} processes on this machine; each runs "
                  f"helpers.pipeline on the CPU for {num_classes} classes, {epochs} epochs, and "
                  f"rank 0 writes {Path(checkpoint_dir).as_posix()}/last.pt")


# Exercise 5 ------------------------------------------------------------------------------------

TODO_CAUTIOUS = ("Write the body of cautious_predict(logits, threshold): per row the argmax class, "
                 "or -1 where the top softmax probability is below threshold, with torch.where "
                 "(no Python if on tensor values, so that torch.export can trace it)")


class _CautiousModel(nn.Module):
    """The deployed model with the learner's ``cautious_predict`` on top, as one module to export."""

    def __init__(self, model: nn.Module, cautious_fn: Callable[..., Any], threshold: float) -> None:
        super().__init__()
        self.model, self.cautious_fn, self.threshold = model, cautious_fn, threshold

    def forward(self, x: Tensor) -> Any:
        return self.cautious_fn(self.model(x), self.threshold)


def _cautious_reference(logits: Tensor, threshold: float) -> Tensor:
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    return torch.where(confidence >= threshold, predicted, -1)


@checker(todo=TODO_CAUTIOUS)
def check_cautious_predict(cautious_fn: Callable[..., Any], model: nn.Module, X: Tensor, *,
                           threshold: float = 0.9) -> bool:
    """Exercise 5: ``cautious_fn(logits, threshold)`` gives the class index per row, or -1 where
    the model is unsure, and ``torch.export`` can trace it with a dynamic batch dimension.

    The checker first calls the function on logits with known answers, then exports the model
    with the function on top and compares the exported program with eager at unseen batch sizes.

    >>> check_cautious_predict(cautious_predict, deployed, test_cpu.X)
    [OK] a class or -1 for each image; torch.export traced it with a dynamic batch; ...
    """
    from helpers.export import quiet_export

    logits = torch.tensor([[4.0, 0.0, 0.0], [0.1, 0.2, 0.0], [0.0, 0.0, 9.0], [1.0, 1.0, 1.0]])
    expected = _cautious_reference(logits, threshold)  # [0, -1, 2, -1] at 0.9
    try:
        got = cautious_fn(logits.clone(), threshold)
    except Exception as exc:  # the learner's code may fail in any way
        raise ExerciseError(f"calling your function failed with {type(exc).__name__}: "
                            f"{_first_line(exc)}") from None
    require(isinstance(got, Tensor),
            f"your function returned a {type(got).__name__}; return one tensor of class indices "
            f"(torch.where keeps it a tensor: an exported program cannot build Python lists)")
    require(tuple(got.shape) == (len(logits),),
            f"for logits of shape {tuple(logits.shape)} your function returned shape "
            f"{tuple(got.shape)}; return one index per row (reduce over dim=1)")
    if not torch.equal(got.long(), expected):
        argmax = logits.argmax(dim=1)
        require(not torch.equal(got.long(), argmax),
                f"no -1 where the model is unsure: rows 1 and 3 have a top probability of 0.37 "
                f"and 0.33, below threshold={threshold}; use torch.where(confidence >= threshold, "
                f"predicted, -1)")
        raise ExerciseError(f"for the logits {logits.tolist()} your function returned "
                            f"{got.tolist()} instead of {expected.tolist()}: the argmax class per "
                            f"row where the top softmax probability is at least {threshold}, else -1")
    wrapped = _CautiousModel(model, cautious_fn, threshold).eval()
    device = _device(model)
    X = X.to(device)
    batch = torch.export.Dim("batch", min=1)
    try:
        with quiet_export():
            program = torch.export.export(wrapped, (X[:4],), dynamic_shapes=({0: batch},)).module()
    except Exception as exc:  # what torch.export says about the learner's code
        raise ExerciseError(
            f"torch.export could not trace your function ({type(exc).__name__}: "
            f"{_first_line(exc)[:160]}). A Python if, a loop over the rows, .item() or bool() on "
            f"tensor values depend on the data; compute all rows at once with "
            f"torch.where(confidence >= threshold, predicted, -1)") from None
    sizes = [n for n in (1, 13, len(X)) if n <= len(X)]
    with torch.no_grad():
        for n in sizes:
            eager = wrapped(X[:n])
            exported = program(X[:n])
            require(torch.equal(exported.long(), eager.long()),
                    f"at batch size {n} the exported program gives {exported[:8].tolist()} but "
                    f"eager {eager[:8].tolist()}; the export kept a decision made for the example "
                    f"batch: use tensor operations only")
        unsure = int((wrapped(X) == -1).sum())
    return passed(f"a class or -1 for each image; torch.export traced it with a dynamic batch and "
                  f"agrees with eager at batch sizes {', '.join(map(str, sizes))}; {unsure} of "
                  f"{len(X)} images are below {threshold}")


#: The answers, as code to paste into the exercise cells (``solution(n)`` shows one). They use the
#: notebook's names: settings, old_model, old_classes, arch, and the imports of its Setup cell.
SOLUTIONS = {
    1: """
        import torch

        from helpers.models import TinyResNet

        extended = TinyResNet(settings.num_classes, **arch).to(settings.device)
        backbone = {k: v for k, v in old_model.state_dict().items() if not k.startswith("fc.")}
        extended.load_state_dict(backbone, strict=False)
        with torch.no_grad():
            extended.fc.weight[:old_classes] = old_model.fc.weight
            extended.fc.bias[:old_classes] = old_model.fc.bias
        """,
    2: """
        import torch


        def predict_digits(model, X, class_names):
            model.eval()
            with torch.inference_mode():
                indices = model(X).argmax(dim=1)
            return [class_names[i] for i in indices.tolist()]
        """,
    3: """
        from helpers.checkpoint import load_checkpoint
        from helpers.training import History, fit


        def resume_training(path, model, optimizer, scheduler, data, epochs):
            state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
            history = History.from_dict(state["history"])
            return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                       start_epoch=state["start_epoch"], history=history, progress=False)
        """,
    4: """
        command = ("torchrun --standalone --nproc-per-node=4 -m helpers.pipeline --device cpu "
                   f"--num-classes {settings.num_classes} --epochs 5 --checkpoint-dir runs/ch4/ex4")
        """,
    5: """
        import torch


        def cautious_predict(logits, threshold=0.9):
            confidence, predicted = logits.softmax(dim=1).max(dim=1)
            return torch.where(confidence >= threshold, predicted, -1)
        """,
}

solution = solution_lookup(4, SOLUTIONS)

__all__ = ["SOLUTIONS", "check_cautious_predict", "check_extended_model", "check_predict_function",
           "check_resume_training", "check_torchrun_command", "solution"]
