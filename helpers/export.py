"""Export a trained model to a file that runs without the training code: ONNX or ``torch.export``.

>>> export_model(model, "runs/export/digits.onnx", class_names=names)
PosixPath('runs/export/digits.onnx')
>>> verify_export("runs/export/digits.onnx", model).max_abs_diff < 1e-4
True

From the command line, for a deployed weights file (``helpers.deploy``) or a training checkpoint
that carries ``class_names`` and ``config``::

    python -m helpers.export --checkpoint runs/deploy/digits.safetensors --format onnx

A weights file still needs the Python class that builds the model. An exported file holds the
computation itself: ``.onnx`` runs in onnxruntime (servers, browsers, phones, C++), ``.pt2``
(``torch.export``, the PyTorch 2 successor of TorchScript) loads with ``torch.export.load`` and
no model code. Both are exported with a *dynamic batch dimension*, so any batch size runs, and both
carry the class names. An export is only trusted once checked: ``verify_export`` loads the file
in a fresh session and compares it with the eager model at batch sizes the export never saw.
ONNX needs ``pip install onnx onnxscript onnxruntime`` (the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers.cli import started_cleanly
from helpers.i18n import _

with started_cleanly(__name__):  # Ctrl-C while torch loads: one line, not 50 lines of frames
    import numpy as np
    import torch
    from torch import nn

    from helpers.checkpoint import CheckpointError, PathLike
    from helpers.checkpoint.archive import pt2_problem
    from helpers.checkpoint.atomic import _atomic_write

FORMATS = {"onnx": ".onnx", "pt2": ".pt2"}
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
ONNX_MIN_TORCH = (2, 11)
ONNX_TORCH = "torch>=2.11"  # listed by missing_onnx_packages() on an older torch
DEFAULT_TOLERANCE = 1e-4
EXPORT_BATCH = 4  # the example batch traced at export; verification uses other sizes too
VERIFY_BATCH_SIZES = (1, 7, 256)
IMAGE_SIZE = 8  # the bundled digits are 8x8
INPUT_NAME, OUTPUT_NAME = "images", "logits"
CLASS_NAMES_KEY = "class_names"  # ONNX metadata key; in a .pt2 the extra file class_names.json
PT2_NAMES_FILE = "class_names.json"


class ExportError(RuntimeError):
    """An export cannot be made or read: says what was wrong and what to do."""


def missing_onnx_packages() -> list[str]:
    """The ONNX packages that are not installed, and ``"torch>=2.11"`` on an older torch (empty
    when the ONNX export can run; ``onnx_export_problem()`` says it in a sentence).

    >>> missing_onnx_packages()
    []
    """
    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):  # a broken install, or one blocked on purpose
            return True

    found = [name for name in ONNX_PACKAGES if missing(name)]
    return found + ([ONNX_TORCH] if _torch_too_old_for_onnx() else [])


def _torch_too_old_for_onnx() -> bool:
    """torch < 2.11: its exporter fails deep inside torch.onnx with onnxscript >= 0.7."""
    found = re.match(r"(\d+)\.(\d+)", torch.__version__)
    return found is not None and (int(found[1]), int(found[2])) < ONNX_MIN_TORCH


def onnx_export_problem() -> str | None:
    """Why ``export_onnx`` cannot run here, in one line; ``None`` when it can.

    >>> onnx_export_problem() is None
    True
    """
    missing = missing_onnx_packages()
    packages = [name for name in missing if name != ONNX_TORCH]
    if packages:
        return _("ONNX export needs {packages}, which is not installed; run "
                 "`pip install onnx onnxscript onnxruntime` (or use --format pt2)"
                 ).format(packages=", ".join(packages))
    if ONNX_TORCH in missing:
        return _("ONNX export needs torch >= 2.11 (this is torch {version}, whose "
                 "exporter fails with onnxscript >= 0.7); upgrade torch, or use --format pt2"
                 ).format(version=torch.__version__)
    return None


def _require_onnx(*, exporting: bool = True) -> None:
    problem = onnx_export_problem()
    reading_works = missing_onnx_packages() == [ONNX_TORCH]  # onnxruntime needs no new torch
    if problem and (exporting or not reading_works):
        raise ExportError(problem)


def format_of(path: PathLike) -> str:
    """``"onnx"`` or ``"pt2"`` from a file name's suffix.

    >>> format_of("runs/export/digits.pt2")
    'pt2'
    """
    suffix = Path(path).suffix
    for fmt, ext in FORMATS.items():
        if suffix == ext:
            return fmt
    raise ExportError(_("{file}: unknown export format {suffix}; name the file *.onnx or *.pt2")
                      .format(file=Path(path).name, suffix=repr(suffix or "(no suffix)")))


def example_input(model: nn.Module, batch_size: int = EXPORT_BATCH, *, seed: int = 0) -> torch.Tensor:
    """Random digit-shaped images ``(batch_size, in_channels, 8, 8)`` on the model's device.

    >>> example_input(TinyResNet(10), 3).shape
    torch.Size([3, 1, 8, 8])
    """
    first = next(iter(model.parameters()))
    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, channels, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    return x.to(device=first.device, dtype=first.dtype)


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(_("expected an nn.Module, got {type}").format(type=type(model).__name__))
    if model.training:
        raise ExportError(_("the model is in training mode: dropout and batch-norm statistics "
                            "would be exported as in training; call model.eval() first"))


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence what an exporter prints besides its exception: log warnings, a partial graph on stderr.

    When ``torch.export`` fails it prints the partial graph (hundreds of lines with local paths)
    to stderr and logs warnings before raising; the exception alone says what went wrong.

    >>> with expect_error(RuntimeError, match="data-dependent"), quiet_export():
    ...     torch.export.export(model_with_an_if_on_values, (images,))
    [expected error] GuardOnDataDependentSymNode: Could not guard on data-dependent expression ...
    """
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _write(path: Path, data: bytes) -> None:
    """Write the serialised export atomically (unique temp, fsync, rename); the exporters
    wrote to memory first, so a full disk is a clean error here and leaves no temp file."""
    try:
        _atomic_write(path, lambda f: f.write(data))
    except CheckpointError as exc:
        raise ExportError(f"{exc.path}: {exc.reason}" + (f"; {exc.advice}" if exc.advice else "")
                          ) from None


def _check_target(path: Path) -> None:
    if path.is_dir():
        raise ExportError(_("{path} is a folder; name the exported file, e.g. {example}").format(
            path=path, example=f"{path / 'model'}{path.suffix or '.onnx'}"))


def _batch_dim() -> tuple[dict[int, object]]:
    # One dynamic dimension, the batch; everything else is fixed by the example input.
    return ({0: torch.export.Dim("batch", min=1)},)


def export_onnx(model: nn.Module, path: PathLike, *, class_names: Sequence[str],
                example: torch.Tensor | None = None) -> Path:
    """Export with ``torch.onnx.export(dynamo=True)``: input ``images``, output ``logits``.

    The batch dimension is dynamic; the class names go into the file's metadata
    (``onnxruntime``: ``session.get_modelmeta().custom_metadata_map["class_names"]``, JSON).

    >>> export_onnx(model, "runs/export/digits.onnx", class_names=names).name
    'digits.onnx'
    """
    _require_onnx()
    _check_model(model)
    path = Path(path)
    _check_target(path)
    example = example_input(model) if example is None else example
    with quiet_export():
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=_batch_dim(),
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    verbose=False)
    program.model.metadata_props[CLASS_NAMES_KEY] = json.dumps([str(n) for n in class_names])
    _write(path, program.model_proto.SerializeToString())  # in memory first (a small model)
    return path


def export_pt2(model: nn.Module, path: PathLike, *, class_names: Sequence[str],
               example: torch.Tensor | None = None) -> Path:
    """Export with ``torch.export.export`` and ``torch.export.save``; the batch dimension is dynamic.

    The class names travel inside the file as the extra file ``class_names.json``.

    >>> export_pt2(model, "runs/export/digits.pt2", class_names=names).name
    'digits.pt2'
    """
    _check_model(model)
    path = Path(path)
    _check_target(path)
    example = example_input(model) if example is None else example
    with quiet_export():
        program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim())
    # Into memory first: torch's archive writer aborts the whole process on a full disk.
    buffer = io.BytesIO()
    torch.export.save(program, buffer,
                      extra_files={PT2_NAMES_FILE: json.dumps([str(n) for n in class_names])})
    _write(path, buffer.getvalue())
    return path


def export_model(model: nn.Module, path: PathLike, *, class_names: Sequence[str],
                 example: torch.Tensor | None = None) -> Path:
    """``export_onnx`` or ``export_pt2``, chosen by the suffix of ``path`` (``.onnx`` / ``.pt2``).

    >>> export_model(model, "runs/export/digits.pt2", class_names=names).suffix
    '.pt2'
    """
    exporter = {"onnx": export_onnx, "pt2": export_pt2}[format_of(path)]
    return exporter(model, path, class_names=class_names, example=example)


def _existing_export(path: PathLike) -> Path:
    path = Path(path)
    if not _is_regular_file(path):
        raise ExportError(_("{path}: no such file; export it first with export_model "
                            "or python -m helpers.export").format(path=path))
    return path


def _is_regular_file(path: Path) -> bool:
    import stat

    try:
        return stat.S_ISREG(path.stat().st_mode)  # not a pipe or a device, which would block
    except (OSError, ValueError):
        return False


def load_onnx(path: PathLike) -> tuple[Callable[[np.ndarray], np.ndarray], list[str]]:
    """A fresh onnxruntime session (CPU) for an exported file, as a function, and its class names.

    Only onnxruntime and NumPy run here: no torch, no model class.

    >>> run, names = load_onnx("runs/export/digits.onnx")
    >>> run(images.numpy()).shape, names[:2]
    ((5, 10), ['0', '1'])
    """
    _require_onnx(exporting=False)
    import onnxruntime

    path = _existing_export(path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    names = json.loads(meta[CLASS_NAMES_KEY]) if CLASS_NAMES_KEY in meta else []
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(images, dtype=np.float32)})[0]

    return run, names


def load_pt2(path: PathLike) -> tuple[nn.Module, list[str]]:
    """``torch.export.load`` an exported program: a module that needs no model class, and its names.

    ``torch.export.load`` unpickles some entries with ``weights_only=False`` (a ``.pt2``, like a
    whole pickled model, can run code), so the archive is read into memory and checked first: one
    with pickled entries or compiled code is refused (``ExportError``) before torch sees it.

    >>> program, names = load_pt2("runs/export/digits.pt2")
    >>> program(images).shape
    torch.Size([5, 10])
    """
    path = _existing_export(path)
    try:
        with open(path, "rb") as f:  # the bytes checked are the bytes loaded
            data = f.read()
    except OSError as exc:
        raise ExportError(_("{path}: cannot read it ({error}: {reason})").format(
            path=path, error=type(exc).__name__, reason=exc.strerror)) from None
    problem = pt2_problem(data)
    if problem:
        raise ExportError(_("{file}: refused: {problem}. Loading it could run code: a .pt2, "
                            "like a whole pickled model, must come from someone you trust; "
                            "export it again yourself with export_pt2").format(
            file=path.name, problem=problem))
    extra = {PT2_NAMES_FILE: ""}
    with warnings.catch_warnings():
        # torch 2.11 (Colab's) warns while reading its own archive (torch.frombuffer on read-only
        # bytes); later releases do not. Nothing writes to those tensors, so the warning says nothing.
        warnings.filterwarnings("ignore", message="The given buffer is not writable", category=UserWarning)
        program = torch.export.load(io.BytesIO(data), extra_files=extra)
    names = json.loads(extra[PT2_NAMES_FILE]) if extra[PT2_NAMES_FILE] else []
    return program.module(), names


@dataclass(frozen=True)
class Verification:
    """Largest absolute difference between the exported file and the eager model, per batch size."""

    path: Path
    max_abs_diffs: dict[int, float]
    class_names: list[str]
    same_predictions: bool  # argmax of the two agrees on every input

    @property
    def max_abs_diff(self) -> float:
        return max(self.max_abs_diffs.values())

    def within(self, tolerance: float = DEFAULT_TOLERANCE) -> bool:
        return self.max_abs_diff <= tolerance


def verify_export(path: PathLike, model: nn.Module, *,
                  batch_sizes: Sequence[int] = VERIFY_BATCH_SIZES, seed: int = 1) -> Verification:
    """Load ``path`` in a fresh session and compare it with eager ``model`` on random inputs.

    For each batch size (by default 1, 7 and 256; the export traced 4) the same random images go
    through the exported file and through ``model`` (in eval mode, no autograd); the result holds
    the largest absolute difference of the logits per batch size.

    >>> verify_export("runs/export/digits.onnx", model).max_abs_diffs
    {1: 3.7e-08, 7: 6e-08, 256: 1.2e-07}
    """
    _check_model(model)
    path = _existing_export(path)
    if format_of(path) == "onnx":
        run, names = load_onnx(path)

        def exported(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(run(x.cpu().numpy()))
    else:
        program, names = load_pt2(path)
        device = next(iter(model.parameters())).device

        def exported(x: torch.Tensor) -> torch.Tensor:
            return program(x.to(device)).cpu()

    diffs, same = {}, True
    with torch.no_grad():
        for n in batch_sizes:
            x = example_input(model, n, seed=seed + n)
            reference = model(x).float().cpu()
            got = exported(x).float()
            if got.shape != reference.shape:
                raise ExportError(_("{file}: output shape {got} at batch size {n}, but the model "
                                    "gives {expected}; it was exported from another model").format(
                    file=path.name, got=tuple(got.shape), n=n, expected=tuple(reference.shape)))
            diffs[n] = float((got - reference).abs().max())
            same = same and bool(torch.equal(got.argmax(1), reference.argmax(1)))
    return Verification(path, diffs, names, same)


def build_parser():  # noqa: ANN201 - argparse.ArgumentParser, built in helpers.export_cli
    """The command line's parser (``helpers.export_cli.build_parser``)."""
    from helpers.export_cli import build_parser as cli_parser

    return cli_parser()


def main(argv: list[str] | None = None) -> int:
    """The command line, ``python -m helpers.export`` (in ``helpers.export_cli``)."""
    from helpers.export_cli import main as cli_main

    return cli_main(argv)


__all__ = ["DEFAULT_TOLERANCE", "ExportError", "Verification", "example_input", "export_model",
           "export_onnx", "export_pt2", "format_of", "load_onnx", "load_pt2",
           "missing_onnx_packages", "onnx_export_problem", "quiet_export", "verify_export"]


if __name__ == "__main__":
    with started_cleanly(__name__):
        from helpers.export_cli import main as cli_main
    raise SystemExit(cli_main())
