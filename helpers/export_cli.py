"""``python -m helpers.export``: export deployed weights to ONNX or ``.pt2`` and verify the file.

>>> main(["--checkpoint", "runs/deploy/digits.safetensors", "--format", "pt2"])  # doctest: +SKIP
0

Every bad input is one ``error:`` line on stderr and exit code 2 (1 when the export differs from
the eager model by more than ``--tolerance``); Ctrl-C is one line and exit code 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import helpers.export as exporting  # looked up at call time (tests patch export_model)
from helpers.checkpoint import CheckpointError
from helpers.cli import ascii_int, one_line, printable, refuse_bad_paths
from helpers.deploy import nonfinite_tensors
from helpers.export import DEFAULT_TOLERANCE, EXPORT_BATCH, FORMATS, ExportError, _require_onnx
from helpers.i18n import N_, _


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.export",
        description=_("Export deployed TinyResNet weights to ONNX or torch.export (.pt2) with a dynamic "
                      "batch dimension, then verify the file against the eager model."))
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help=_("weights (.safetensors/.pt, with a .json sidecar) or a training "
                               "checkpoint"))
    parser.add_argument("--format", choices=sorted(FORMATS), required=True,
                        help=_("onnx (onnxruntime) or pt2 (torch.export)"))
    parser.add_argument("--output", type=Path,
                        help=_("the exported file (default: the checkpoint's name with .onnx/.pt2)"))
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=_("largest allowed max abs difference to eager (default "
                               "{tolerance:g})").format(tolerance=DEFAULT_TOLERANCE))
    for name, what in (("num_classes", N_("class count")), ("width", N_("TinyResNet width")),
                       ("depth", N_("TinyResNet blocks"))):
        parser.add_argument(f"--{name.replace('_', '-')}", type=ascii_int,
                            help=_("{what} (default: from the metadata)").format(what=_(what)))
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line: load, export, verify in a fresh session; 0 ok, 1 over tolerance, 2 error."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(_("error: interrupted (Ctrl-C); an export being written was not kept"), file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    from helpers.deploy import load_for_inference, tiny_resnet_config

    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_bad_paths(parser, {"--checkpoint": args.checkpoint, "--output": args.output})
    output = args.output or args.checkpoint.with_suffix(FORMATS[args.format])
    try:
        if not args.tolerance >= 0:
            raise ExportError(_("--tolerance must be a number >= 0, got {tolerance}").format(
                                  tolerance=args.tolerance))
        if output.is_dir():
            raise ExportError(_("--output {output} is a folder; name the file, e.g. {example}").format(
                                  output=output, example=output / ('model' + FORMATS[args.format])))
        if output.suffix != FORMATS[args.format]:
            raise ExportError(_("--output {output} does not end in {suffix}, the suffix of --format "
                                "{format}; rename it").format(
                                  output=output, suffix=FORMATS[args.format], format=args.format))
        if args.checkpoint.suffix in FORMATS.values():
            raise ExportError(_("{checkpoint} is an exported file already; pass the weights file or "
                                "training checkpoint it came from").format(checkpoint=args.checkpoint))
        model, names = load_for_inference(args.checkpoint, num_classes=args.num_classes,
                                          width=args.width, depth=args.depth)
        if args.format == "onnx":  # after the checkpoint: its own problem is named first
            _require_onnx()
        bad = nonfinite_tensors(model)
        if bad:
            raise ExportError(_("{checkpoint}: {n_bad} tensor(s) hold NaN or infinite values ({bad}); "
                                "an export of them would predict nothing useful. Export an earlier "
                                "checkpoint, e.g. best.pt").format(
                                  checkpoint=args.checkpoint, n_bad=len(bad), bad=', '.join(bad[:3])))
    except (CheckpointError, ExportError, OSError, ValueError) as exc:
        print(_("error: {message}").format(message=one_line(exc)), file=sys.stderr)
        return 2
    except Exception as exc:  # anything else a strange file causes: still one line
        print(_("error: cannot load {checkpoint}: {type}: {message}").format(
                  checkpoint=args.checkpoint, type=type(exc).__name__, message=one_line(exc)),
              file=sys.stderr)
        return 2
    config = tiny_resnet_config(model)
    print(_("loaded {name}: TinyResNet, {classes} classes, width {width}, depth {depth}").format(
              name=args.checkpoint.name, classes=config["num_classes"], width=config["width"],
              depth=config["depth"]))
    start = time.perf_counter()
    try:
        exporting.export_model(model, output, class_names=names)
        seconds = time.perf_counter() - start
        result = exporting.verify_export(output, model)
    except (ExportError, OSError) as exc:
        print(_("error: {message}").format(message=one_line(exc)), file=sys.stderr)
        return 2
    except Exception as exc:  # the exporter's own failure: one line, not its deep traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(_("error: the {format} export failed: {type}: {first}").format(
                  format=args.format, type=type(exc).__name__, first=first), file=sys.stderr)
        return 2
    runtime = "onnxruntime" if args.format == "onnx" else "torch.export.load"
    sizes = ", ".join(str(n) for n in result.max_abs_diffs)
    print(_("exported {output} ({kilobytes:.0f} kB) in {seconds:.1f} s, dynamic batch dimension (traced at "
            "batch size {batch})").format(
              output=output, kilobytes=output.stat().st_size / 1e3, seconds=seconds, batch=EXPORT_BATCH))
    print(_("verified with {runtime} in a fresh session at batch sizes {sizes}: max abs diff "
            "{max_abs_diff:.1e} (tolerance {tolerance:.0e}); same predicted classes: "
            "{same_predictions}; class names: {names}").format(
              runtime=runtime, sizes=sizes, max_abs_diff=result.max_abs_diff, tolerance=args.tolerance,
              same_predictions=result.same_predictions,
              names=" ".join(printable(n) for n in result.class_names)))
    if not result.within(args.tolerance):
        print(_("error: the exported file differs from the eager model by {max_abs_diff:.1e}, more than "
                "--tolerance {tolerance:.0e}; do not ship it (kept at {output} for inspection)").format(
                  max_abs_diff=result.max_abs_diff, tolerance=args.tolerance, output=output), file=sys.stderr)
        return 1
    return 0


__all__ = ["build_parser", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
