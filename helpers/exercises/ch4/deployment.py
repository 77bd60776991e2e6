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
from helpers.i18n import N_, _, ngettext

#: torchrun's own options: after ``-m helpers.pipeline`` they reach the pipeline, not torchrun.
_LEFT_AS_TEXT = N_(": a {name} was left as text; put an f in front of the string (f\"...\")")
_TORCHRUN_OPTIONS = ("--standalone", "--nproc-per-node", "--nproc_per_node", "--nnodes",
                     "--rdzv-backend", "--rdzv_backend", "--rdzv-endpoint", "--rdzv_endpoint",
                     "--node-rank", "--node_rank", "--master-addr", "--master_addr")


def _torchrun_argv(command: str | Sequence[str]) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    require(argv, _("the command is empty"))
    head = Path(argv[0]).name
    if head == "torchrun":
        return argv[1:]
    if head.startswith("python") and argv[1:3] == ["-m", "torch.distributed.run"]:
        return argv[3:]
    raise ExerciseError(_("the command starts with {argv!r}; start it with torchrun (or python -m "
                          "torch.distributed.run), which launches the processes").format(argv=argv[0]))


TODO_TORCHRUN = (N_("Write command: a string that starts helpers.pipeline under torchrun in 4 CPU "
                    "processes on this machine, for settings.num_classes digits, 5 epochs, checkpoints "
                    "in runs/ch4/ex4"))


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
        raise ExerciseError(_("torchrun would refuse these arguments: {problem}").format(
                                problem=problem[-1] if problem else argv)) from None
    misplaced = [a.split("=")[0] for a in launcher.training_script_args
                 if a.split("=")[0] in _TORCHRUN_OPTIONS]
    if misplaced:
        raise ExerciseError(
            ngettext("{options} comes after the script, so torchrun never sees it (it would start 1 "
                     "process) and helpers.pipeline gets it instead and refuses it. The order is: "
                     "torchrun, torchrun's options (--standalone --nproc-per-node={processes}), then "
                     "-m helpers.pipeline, then the pipeline's options",
                     "{options} come after the script, so torchrun never sees them (it would start 1 "
                     "process) and helpers.pipeline gets them instead and refuses them. The order "
                     "is: torchrun, torchrun's options (--standalone --nproc-per-node={processes}), "
                     "then -m helpers.pipeline, then the pipeline's options", len(misplaced)).format(
                options=" ".join(misplaced), processes=processes))
    require(launcher.module and launcher.training_script == "helpers.pipeline",
            (_("torchrun would run {script!r} as a module; run the module: -m helpers.pipeline "
               "(torchrun's options go before it, the script's after it)") if launcher.module else
             _("torchrun would run {script!r} as a script file; run the module: -m helpers.pipeline "
               "(torchrun's options go before it, the script's after it)")).format(
                script=launcher.training_script))
    require(launcher.nproc_per_node == str(processes),
            _("--nproc-per-node is {given}; the exercise asks for {processes} processes").format(
                given=launcher.nproc_per_node, processes=processes))
    require(launcher.standalone or launcher.nnodes in ("1", "1:1"),
            _("--nnodes={nnodes} waits for other machines; for one machine add --standalone").format(
                nnodes=launcher.nnodes))
    pipeline_errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(pipeline_errors):
            args = build_parser().parse_args(launcher.training_script_args)
    except SystemExit:
        problem = pipeline_errors.getvalue().strip().splitlines()
        braces = any("{" in a for a in launcher.training_script_args)
        hint = _(_LEFT_AS_TEXT) if braces else ""
        raise ExerciseError(_("helpers.pipeline would refuse its arguments {arguments}: "
                              "{problem}{hint}").format(arguments=launcher.training_script_args,
                                                        problem=problem[-1] if problem else "",
                                                        hint=hint)) from None
    require(str(args.device).lower() == "cpu",
            _("--device is {device!r}: with auto, each process looks for a GPU of its own "
              "(cuda:LOCAL_RANK). On a CPU-only run pass --device cpu (gloo)").format(device=args.device))
    require(str(args.num_classes) == str(num_classes),
            _("--num-classes is {given}; the widget asks for {num_classes}").format(
                given=args.num_classes, num_classes=num_classes)
            + (_(_LEFT_AS_TEXT) if "{" in str(args.num_classes) else ""))
    require(args.epochs == epochs, _("--epochs is {epochs}; the exercise asks for {wanted}").format(
                                       epochs=args.epochs, wanted=epochs))
    require(Path(args.checkpoint_dir) == Path(checkpoint_dir),
            _("--checkpoint-dir is {given}; the exercise asks for {checkpoint_dir}").format(
                given=args.checkpoint_dir.as_posix(), checkpoint_dir=checkpoint_dir))
    require(not args.resume, _("--resume continues an earlier run; this one starts from scratch"))
    folder = Path(checkpoint_dir).as_posix()
    writes = (_("every rank writes its part of {folder}/last") if args.checkpoint_format == "dcp"
              else _("rank 0 writes {folder}/last.pt")).format(folder=folder)
    return passed(_("torchrun starts {processes} processes on this machine; each runs helpers.pipeline "
                    "on the CPU for {num_classes} classes, {epochs} epochs, and {writes}").format(
                      processes=processes, num_classes=num_classes, epochs=epochs, writes=writes))


# Exercise 5 ------------------------------------------------------------------------------------

TODO_CAUTIOUS = (N_("Write the body of cautious_predict(logits, threshold): per row the argmax class, "
                    "or -1 where the top softmax probability is below threshold, with torch.where (no "
                    "Python if on tensor values, so that torch.export can trace it)"))


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
    got = call_learner(cautious_fn, logits.clone(), threshold, what=_("your function"))
    require(isinstance(got, Tensor),
            _("your function returned a {type}; return one tensor of class indices (torch.where keeps "
              "it a tensor: an exported program cannot build Python lists)").format(
                type=type(got).__name__))
    require(tuple(got.shape) == (len(logits),),
            _("for logits of shape {shape} your function returned shape {got}; return one index per "
              "row: reduce over dim=1 (.max(dim=1)), not over the whole batch").format(
                shape=tuple(logits.shape), got=tuple(got.shape)))
    got = got.long()
    if not torch.equal(got, expected):
        confidence, predicted = logits.softmax(dim=1).max(dim=1)
        slips = {
            N_("no -1 where the model is unsure (rows 1 and 3 have a top probability of 0.37 and "
               "0.33): use torch.where(confidence >= threshold, predicted, -1)"): logits.argmax(dim=1),
            N_("the softmax runs over dim=0, the batch, so each row's probability depends on the "
               "other images: use logits.softmax(dim=1), over the classes"):
                torch.where(logits.softmax(dim=0).max(dim=1).values >= threshold,
                            logits.argmax(dim=1), -1),
            N_("the condition is the wrong way round: keep the class where confidence >= threshold, "
               "-1 elsewhere"): torch.where(confidence < threshold, predicted, -1),
        }
        if torch.equal(got, logits.argmax(dim=1)):
            unsure_only = call_learner(cautious_fn, logits[[1, 3]].clone(), threshold,
                                       what=_("your function"))
            if isinstance(unsure_only, Tensor) and unsure_only.long().tolist() == [-1, -1]:
                raise ExerciseError(
                    _("alone, the unsure rows get -1, but next to a confident row they get a class "
                      "(your answers: {got}, right: {expected}): the decision uses the whole "
                      "batch's maximum (.max() without dim). Take confidence, predicted = "
                      "logits.softmax(dim=1).max(dim=1), one per row").format(
                        got=got.tolist(), expected=expected.tolist()))
        for why, answer in slips.items():
            require(not torch.equal(got, answer), _("{why} (your answers: {got}, right: {expected})").format(
                why=_(why), got=got.tolist(), expected=expected.tolist()))
        raise ExerciseError(_("for the logits {logits} your function returned {got} instead of "
                              "{expected}: the argmax class per row where the top softmax probability "
                              "is at least {threshold}, else -1").format(
                                logits=_KNOWN, got=got.tolist(), expected=expected.tolist(),
                                threshold=threshold))
    edge = call_learner(cautious_fn, torch.tensor([[0.0, 0.0], [2.0, 0.0]]), 0.5,
                        what=_("your function"))
    require(isinstance(edge, Tensor) and edge.long().tolist() == [0, 0],
            _("with threshold=0.5 and a row whose top probability is exactly 0.5 your function returned "
              "{got} instead of [0, 0]: a probability equal to the threshold is sure enough "
              "(confidence >= threshold, not >)").format(
                got=edge.tolist() if isinstance(edge, Tensor) else edge))


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
            _("torch.export could not trace your function ({type}: {message}). A Python if, a loop "
              "over the rows, .item() or bool() on tensor values depend on the data; compute all rows "
              "at once with torch.where(confidence >= threshold, predicted, -1)").format(
                type=type(exc).__name__, message=first_line(exc)[:160])) from None
    sizes = [n for n in (1, 13, len(X)) if n <= len(X)]
    with torch.no_grad():
        for n in sizes:
            exported = program(X[:n]).long().cpu()
            want = _cautious_reference(model(X[:n]).float(), threshold).cpu()
            wrong = (exported != want).nonzero().flatten().tolist()
            require(not wrong,
                    _("on {n} real digits the exported program answers image {image} with {got} "
                      "where the softmax over the classes, per row, gives {want}: decide each row "
                      "from its own probabilities, with tensor operations only").format(
                        n=n, image=wrong[0] if wrong else 0,
                        got=exported[wrong[0]].item() if wrong else 0,
                        want=want[wrong[0]].item() if wrong else 0))
        alone = [int(program(X[i:i + 1]).long().item()) for i in range(min(len(X), 8))]
        in_batch = program(X[:8]).long().tolist()
        require(alone == in_batch[:len(alone)],
                _("the first images get {alone} one at a time but {in_batch} in a batch: the answer for "
                  "one image depends on the others").format(alone=alone, in_batch=in_batch[:len(alone)]))
        unsure = int((program(X) == -1).sum())
    return passed(_("a class or -1 for each image; torch.export traced it with a dynamic batch and it "
                    "agrees with the reference, row by row, at batch sizes {sizes}; {unsure} of {images} "
                    "images are below {threshold}").format(
                      sizes=', '.join(map(str, sizes)), unsure=unsure, images=len(X), threshold=threshold))
