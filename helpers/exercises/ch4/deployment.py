"""Chapter 4 checkers, exercises 4-5: a torchrun command line, a cautious prediction that exports.

>>> check_torchrun_command(command, processes=4, num_classes=10, epochs=5, checkpoint_dir="runs/x")
[OK] torchrun starts 4 processes on this machine; each runs helpers.pipeline on the CPU ...
"""

from __future__ import annotations

import contextlib
import io
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from helpers.exercises import ExerciseError, checker, passed, require
from helpers.exercises.common import call_learner, device_of, first_line

#: torchrun's own options: after ``-m helpers.pipeline`` they reach the pipeline, not torchrun.
_TORCHRUN_OPTIONS = ("--standalone", "--nproc-per-node", "--nproc_per_node", "--nnodes",
                     "--rdzv-backend", "--rdzv_backend", "--rdzv-endpoint", "--rdzv_endpoint",
                     "--node-rank", "--node_rank", "--master-addr", "--master_addr")


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
    misplaced = [a.split("=")[0] for a in launcher.training_script_args
                 if a.split("=")[0] in _TORCHRUN_OPTIONS]
    if misplaced:
        raise ExerciseError(
            f"{' '.join(misplaced)} {'comes' if len(misplaced) == 1 else 'come'} after the script, "
            f"so torchrun never sees {'it' if len(misplaced) == 1 else 'them'} (it would start 1 "
            f"process) and helpers.pipeline gets {'it' if len(misplaced) == 1 else 'them'} "
            f"instead and refuses {'it' if len(misplaced) == 1 else 'them'}. The order "
            f"is: torchrun, torchrun's options (--standalone --nproc-per-node={processes}), then "
            f"-m helpers.pipeline, then the pipeline's options")
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
        braces = any("{" in a for a in launcher.training_script_args)
        hint = (": a {name} was left as text; put an f in front of the string (f\"...\")"
                if braces else "")
        raise ExerciseError(f"helpers.pipeline would refuse its arguments "
                            f"{launcher.training_script_args}: "
                            f"{problem[-1] if problem else ''}{hint}") from None
    require(str(args.device).lower() == "cpu",
            f"--device is {args.device!r}: with auto, each process looks for a GPU of its own "
            f"(cuda:LOCAL_RANK). On a CPU-only run pass --device cpu (gloo)")
    braces = ": a {name} was left as text; put an f in front of the string (f\"...\")"
    require(str(args.num_classes) == str(num_classes),
            f"--num-classes is {args.num_classes}; the widget asks for {num_classes}"
            + (braces if "{" in str(args.num_classes) else ""))
    require(args.epochs == epochs, f"--epochs is {args.epochs}; the exercise asks for {epochs}")
    require(Path(args.checkpoint_dir) == Path(checkpoint_dir),
            f"--checkpoint-dir is {args.checkpoint_dir.as_posix()}; the exercise asks for "
            f"{checkpoint_dir}")
    require(not args.resume, "--resume continues an earlier run; this one starts from scratch")
    folder = Path(checkpoint_dir).as_posix()
    writes = (f"every rank writes its part of {folder}/last" if args.checkpoint_format == "dcp"
              else f"rank 0 writes {folder}/last.pt")
    return passed(f"torchrun starts {processes} processes on this machine; each runs "
                  f"helpers.pipeline on the CPU for {num_classes} classes, {epochs} epochs, and "
                  f"{writes}")


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


#: Known logits: rows 0 and 4 (and 5 and 6) compete within a column, so a softmax over the batch
#: (dim=0) answers differently from the softmax over the classes (dim=1).
_KNOWN = [[4.0, 0.0, 0.0], [0.1, 0.2, 0.0], [0.0, 0.0, 9.0], [1.0, 1.0, 1.0], [6.0, 0.0, 0.0],
          [0.0, 5.0, 0.0], [0.0, 4.9, 0.0]]


def _check_known_logits(cautious_fn: Callable[..., Any], threshold: float) -> None:
    """The function on logits with known answers; name the slip when it gets them wrong."""
    logits = torch.tensor(_KNOWN)
    expected = _cautious_reference(logits, threshold)
    got = call_learner(cautious_fn, logits.clone(), threshold, what="your function")
    require(isinstance(got, Tensor),
            f"your function returned a {type(got).__name__}; return one tensor of class indices "
            f"(torch.where keeps it a tensor: an exported program cannot build Python lists)")
    require(tuple(got.shape) == (len(logits),),
            f"for logits of shape {tuple(logits.shape)} your function returned shape "
            f"{tuple(got.shape)}; return one index per row: reduce over dim=1 "
            f"(.max(dim=1)), not over the whole batch")
    got = got.long()
    if not torch.equal(got, expected):
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        slips = {
            "no -1 where the model is unsure (rows 1 and 3 have a top probability of 0.37 and "
            "0.33): use torch.where(confidence >= threshold, predicted, -1)": logits.argmax(dim=1),
            "the softmax runs over dim=0, the batch, so each row's probability depends on the "
            "other images: use logits.softmax(dim=1), over the classes":
                torch.where(logits.softmax(dim=0).max(dim=1).values >= threshold,
                            logits.argmax(dim=1), -1),
            "the condition is the wrong way round: keep the class where confidence >= threshold, "
            "-1 elsewhere": torch.where(confidence < threshold, predicted, -1),
        }
        if torch.equal(got, logits.argmax(dim=1)):
            unsure_only = call_learner(cautious_fn, logits[[1, 3]].clone(), threshold,
                                       what="your function")
            if isinstance(unsure_only, Tensor) and unsure_only.long().tolist() == [-1, -1]:
                raise ExerciseError(
                    f"alone, the unsure rows get -1, but next to a confident row they get a class "
                    f"(your answers: {got.tolist()}, right: {expected.tolist()}): the decision "
                    f"uses the whole batch's maximum (.max() without dim). Take "
                    f"confidence, predicted = logits.softmax(dim=1).max(dim=1), one per row")
        for why, answer in slips.items():
            require(not torch.equal(got, answer), f"{why} (your answers: {got.tolist()}, right: "
                                                  f"{expected.tolist()})")
        raise ExerciseError(f"for the logits {_KNOWN} your function returned "
                            f"{got.tolist()} instead of {expected.tolist()}: the argmax class per "
                            f"row where the top softmax probability is at least {threshold}, "
                            f"else -1")
    edge = call_learner(cautious_fn, torch.tensor([[0.0, 0.0], [2.0, 0.0]]), 0.5,
                        what="your function")
    require(isinstance(edge, Tensor) and edge.long().tolist() == [0, 0],
            f"with threshold=0.5 and a row whose top probability is exactly 0.5 your function "
            f"returned {edge.tolist() if isinstance(edge, Tensor) else edge} instead of [0, 0]: a "
            f"probability equal to the threshold is sure enough (confidence >= threshold, not >)")


@checker(todo=TODO_CAUTIOUS)
def check_cautious_predict(cautious_fn: Callable[..., Any], model: nn.Module, X: Tensor, *,
                           threshold: float = 0.9) -> bool:
    """Exercise 5: ``cautious_fn(logits, threshold)`` gives the class index per row, or -1 where
    the model is unsure, and ``torch.export`` can trace it with a dynamic batch dimension.

    The checker first calls the function on logits with known answers (where a softmax over the
    batch answers differently), then exports the model with the function on top and compares the
    exported program, row by row, with the reference on real digits at unseen batch sizes, and
    each image alone with the same image in a batch.

    >>> check_cautious_predict(cautious_predict, deployed, test_cpu.X)
    [OK] a class or -1 for each image; torch.export traced it with a dynamic batch; ...
    """
    from helpers.export import quiet_export

    _check_known_logits(cautious_fn, threshold)
    wrapped = _CautiousModel(model, cautious_fn, threshold).eval()
    device = device_of(model)
    X = X.to(device)
    batch = torch.export.Dim("batch", min=1)
    try:
        with quiet_export():
            program = torch.export.export(wrapped, (X[:4],), dynamic_shapes=({0: batch},)).module()
    except Exception as exc:  # what torch.export says about the learner's code
        raise ExerciseError(
            f"torch.export could not trace your function ({type(exc).__name__}: "
            f"{first_line(exc)[:160]}). A Python if, a loop over the rows, .item() or bool() on "
            f"tensor values depend on the data; compute all rows at once with "
            f"torch.where(confidence >= threshold, predicted, -1)") from None
    sizes = [n for n in (1, 13, len(X)) if n <= len(X)]
    with torch.no_grad():
        for n in sizes:
            exported = program(X[:n]).long().cpu()
            want = _cautious_reference(model(X[:n]).float(), threshold).cpu()
            wrong = (exported != want).nonzero().flatten().tolist()
            require(not wrong,
                    f"on {n} real digits the exported program answers image {wrong[0] if wrong else 0} "
                    f"with {exported[wrong[0]].item() if wrong else 0} where the softmax over the "
                    f"classes, per row, gives {want[wrong[0]].item() if wrong else 0}: decide each "
                    f"row from its own probabilities, with tensor operations only")
        alone = [int(program(X[i:i + 1]).long().item()) for i in range(min(len(X), 8))]
        in_batch = program(X[:8]).long().tolist()
        require(alone == in_batch[:len(alone)],
                f"the first images get {alone} one at a time but {in_batch[:len(alone)]} in a "
                f"batch: the answer for one image depends on the others")
        unsure = int((program(X) == -1).sum())
    return passed(f"a class or -1 for each image; torch.export traced it with a dynamic batch and "
                  f"it agrees with the reference, row by row, at batch sizes "
                  f"{', '.join(map(str, sizes))}; {unsure} of {len(X)} images are below {threshold}")
