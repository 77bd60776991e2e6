"""Deployment: ship weights with what is needed to use them; load and predict in a fresh process.

>>> save_for_deployment(model, "runs/deploy/digits.safetensors", class_names=data.class_names)
(PosixPath('runs/deploy/digits.safetensors'), PosixPath('runs/deploy/digits.json'))

Then, in another process that knows nothing of the training code's variables::

    python -m helpers.deploy --checkpoint runs/deploy/digits.safetensors

Weights alone do not say how to use them: the model must be rebuilt in code (the container) before
the weights (the contents) go in, and a prediction is an index until it is mapped to a class name.
So a weights file travels with a small JSON sidecar (same name, ``.json``) holding the class names
and the ``TinyResNet`` arguments. A training checkpoint that carries ``class_names`` and ``config``
among its extras (``helpers.pipeline`` writes those) needs no sidecar.
"""

from __future__ import annotations

import argparse
import json
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.cli import ascii_int, one_line, printable, refuse_bad_paths, started_cleanly, whole_number
from helpers.i18n import N_, _

with started_cleanly(__name__):  # Ctrl-C while torch loads: one line, not 50 lines of frames
    import torch
    from torch import nn

    from helpers.checkpoint import (
        CheckpointError,
        PathLike,
        _read,
        load_weights,
        save_weights,
        unwrap_model,
    )
    from helpers.checkpoint.atomic import _atomic_write
    from helpers.models import TinyResNet
    from helpers.plots import predict
    from helpers.report import measured, tolerate_narrow_console

# TinyResNet's constructor arguments, as a sidecar or a checkpoint's config stores them.
ARCH_KEYS = ("num_classes", "in_channels", "width", "depth", "dropout")
# What a sidecar may ask for: the integer arguments' sane ranges (a typo like width 100000 would
# try to allocate gigabytes), the size of the file and of the class names.
INT_RANGES = {"num_classes": (1, 100_000), "in_channels": (1, 64), "width": (1, 1024),
              "depth": (1, 64)}
MAX_SIDECAR_BYTES = 1 << 20
MAX_NAME_CHARS = 200


@dataclass(frozen=True)
class DeployInfo:
    """What a weights file needs besides its tensors: the architecture and the class names."""

    config: dict[str, Any]
    class_names: list[str]
    source: str  # where the two came from: the sidecar's name or "checkpoint extras"


def tiny_resnet_config(model: nn.Module) -> dict[str, Any]:
    """The ``TinyResNet`` arguments that rebuild ``model``, read from its layers (not typed in).

    >>> tiny_resnet_config(TinyResNet(5, width=32, depth=1))
    {'num_classes': 5, 'in_channels': 1, 'width': 32, 'depth': 1, 'dropout': 0.0}
    """
    model = unwrap_model(model)
    if not isinstance(model, TinyResNet):
        raise TypeError(_("expected a TinyResNet, got {type}; deploy that model's weights together with "
                          "the code that builds it").format(type=type(model).__name__))
    return {"num_classes": model.fc.out_features, "in_channels": model.stem[0].in_channels,
            "width": model.fc.in_features, "depth": len(model.blocks),
            "dropout": float(model.dropout.p)}


def sidecar_path(path: PathLike) -> Path:
    """The JSON file that goes with a weights file: the same name with ``.json``.

    >>> sidecar_path("runs/deploy/digits.safetensors").as_posix()
    'runs/deploy/digits.json'
    """
    return Path(path).with_suffix(".json")


def save_for_deployment(model: nn.Module, path: PathLike, *,
                        class_names: Sequence[str]) -> tuple[Path, Path]:
    """Write the weights only (``save_weights``) and a JSON sidecar with config and class names.

    ``path`` ending in ``.safetensors`` gives a file that holds tensors and nothing else; ``.pt``
    a ``torch.save`` state_dict. Both files are written atomically. Returns both paths.

    >>> save_for_deployment(net, "runs/d/net.safetensors", class_names=["0", "1"])[1].name
    'net.json'
    """
    config = tiny_resnet_config(model)
    names = [str(name) for name in class_names]
    if len(names) != config["num_classes"]:
        raise ValueError(_("the model has {outputs} outputs but {n_names} class names were given; pass "
                           "one name per output").format(outputs=config['num_classes'], n_names=len(names)))
    weights = save_weights(model, path)
    sidecar = sidecar_path(weights)
    text = json.dumps({"class_names": names, "config": config}, indent=2) + "\n"
    _atomic_write(sidecar, lambda f: f.write(text.encode()))  # temp with pid, fsync, rename
    return weights, sidecar


def check_config(config: Any, source: PathLike) -> dict[str, Any]:
    """The ``TinyResNet`` arguments in ``config``, checked: a dict, ints in ``INT_RANGES``, a
    dropout in [0, 1); anything else raises ``CheckpointError`` naming the value, before a model
    is built. Keys that are not ``TinyResNet`` arguments (a training config's ``lr``) are ignored.

    >>> check_config({"num_classes": 10, "width": 64, "lr": 0.01}, "digits.json")
    {'num_classes': 10, 'width': 64}
    """
    advice = _("Write it again with save_for_deployment, or fix the value.")
    if not isinstance(config, Mapping):
        raise CheckpointError(source, _("config must be a dict of TinyResNet arguments, got {type}").format(
                                          type=type(config).__name__), advice)
    checked: dict[str, Any] = {}
    for key in ARCH_KEYS:
        if key not in config or config[key] is None:
            continue
        value = config[key]
        if key == "dropout":
            ok = (not isinstance(value, bool) and isinstance(value, (int, float))
                  and 0 <= value < 1)
            if not ok:
                raise CheckpointError(source, _("config dropout must be a number in [0, 1), got "
                                                "{value!r}").format(value=value), advice)
            checked[key] = float(value)
            continue
        low, high = INT_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise CheckpointError(source, _("config {key} must be a whole number from {low} to {high}, "
                                            "got {value!r}").format(
                                              key=key, low=low, high=high, value=value), advice)
        checked[key] = value
    return checked


def check_class_names(names: Any, source: PathLike) -> list[str]:
    """``names`` as a list of strings (not one string, which would split into characters)."""
    advice = _("Write it again with save_for_deployment(model, path, class_names=[...]).")
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        raise CheckpointError(source, _("class_names must be a list of strings, got {type} {names!r}").format(
                                          type=type(names).__name__, names=str(names)[:40]), advice)
    if len(names) > INT_RANGES["num_classes"][1]:
        raise CheckpointError(source, _("{n_names:,} class names is more than the {maximum:,} "
                                        "allowed").format(
                                          n_names=len(names), maximum=INT_RANGES['num_classes'][1]), advice)
    bad = next((n for n in names if not isinstance(n, str) or len(n) > MAX_NAME_CHARS), None)
    if bad is not None:
        raise CheckpointError(source, _("each class name must be a string of at most {maximum} "
                                        "characters, got {bad!r}").format(
                                          maximum=MAX_NAME_CHARS, bad=str(bad)[:40]), advice)
    return list(names)


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    advice = _("Write it again with save_for_deployment.")
    try:
        info = sidecar.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block, /dev/zero never end
            raise CheckpointError(sidecar, _("the sidecar is not a regular file (a pipe, socket or "
                                             "device)"), advice)
        with open(sidecar, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)  # never more, whatever stat said
        if len(raw) > MAX_SIDECAR_BYTES or info.st_size > MAX_SIDECAR_BYTES:
            size = max(len(raw), info.st_size)
            raise CheckpointError(sidecar, _("the sidecar is {size:,} bytes; a real one is a few "
                                             "hundred (at most {maximum:,})").format(
                                               size=size, maximum=MAX_SIDECAR_BYTES), advice)
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(sidecar, _("not UTF-8 text"), advice) from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(sidecar, _("not valid JSON ({exc})").format(exc=exc), advice) from None
    except RecursionError:
        raise CheckpointError(sidecar, _("its JSON is nested too deeply to be a sidecar"), advice) from None
    except OSError as exc:
        raise CheckpointError(sidecar, _("cannot read it ({type}: {strerror})").format(
                                           type=type(exc).__name__, strerror=exc.strerror),
                              advice) from None
    if not isinstance(meta, dict) or "class_names" not in meta or "config" not in meta:
        raise CheckpointError(sidecar, _("it has no class_names and config"), advice)
    return meta


def _is_dcp(path: PathLike) -> bool:
    """A ``torch.distributed.checkpoint`` folder (checked without importing DCP, seconds)."""
    try:
        return Path(path).is_dir() and (Path(path) / ".metadata").is_file()
    except OSError:
        return False


def read_deploy_info(path: PathLike) -> DeployInfo | None:
    """Config and class names for a weights file: from its sidecar, else the checkpoint's extras.

    Returns None when neither has them (a bare state_dict without a sidecar).

    >>> read_deploy_info("runs/deploy/digits.safetensors").class_names[:3]
    ['0', '1', '2']
    """
    path = Path(path)
    sidecar = sidecar_path(path)
    try:
        has_sidecar = sidecar.exists() or sidecar.is_symlink()
    except OSError:  # a name too long, a folder without permission: _read below says so
        has_sidecar = False
    if has_sidecar:
        meta = _read_sidecar(sidecar)
        return DeployInfo(check_config(meta["config"], sidecar),
                          check_class_names(meta["class_names"], sidecar), sidecar.name)
    if _is_dcp(path):  # a DCP folder (pipeline --checkpoint-format dcp): its extras, no tensors
        from helpers.checkpoint.sharded import read_sharded_extras

        obj = read_sharded_extras(path)
    else:
        obj = _read(path)
    if isinstance(obj, Mapping) and "class_names" in obj:
        config = obj.get("config") if isinstance(obj.get("config"), Mapping) else {}
        return DeployInfo(check_config(config, path), check_class_names(obj["class_names"], path),
                          "checkpoint extras")
    return None


def load_for_inference(path: PathLike, *, device: torch.device | str = "cpu",
                       **overrides: Any) -> tuple[nn.Module, list[str]]:
    """Rebuild the ``TinyResNet``, load the weights (read onto the CPU), move it, switch to eval.

    ``overrides`` (``num_classes``, ``width``, ``depth``, ...) replace or supply the config; class
    names default to ``"0"``, ``"1"``, ... when no metadata is found.

    >>> model, names = load_for_inference("runs/deploy/digits.safetensors")
    >>> model.training, names[:2]
    (False, ['0', '1'])
    """
    info = read_deploy_info(path)
    config = {**(info.config if info else {}), **{k: v for k, v in overrides.items() if v is not None}}
    if "num_classes" not in config:
        raise CheckpointError(path, _("the class count is unknown: there is no sidecar {name} and no "
                                      "config in the file").format(name=sidecar_path(path).name),
                              _("Pass --num-classes (and --width/--depth as trained), or save with "
                                "helpers.deploy.save_for_deployment."))
    config = check_config(config, path)  # overrides too: nothing huge is built
    try:
        model = TinyResNet(**config)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(path, _("cannot build TinyResNet({config}): {exc}").format(
                                        config=config, exc=exc),
                              _("Pass the arguments the model was trained with.")) from None
    if _is_dcp(path):
        from helpers.checkpoint.sharded import load_sharded_weights

        load_sharded_weights(model, path)  # strict: every key must fit, checked before loading
    else:
        load_weights(model, path, map_location="cpu")  # strict: every key must fit
    names = info.class_names if info else [str(i) for i in range(config["num_classes"])]
    if len(names) != config["num_classes"]:
        raise CheckpointError(path, _("{n_names} class names for a {classes}-class model").format(
                                        n_names=len(names), classes=config["num_classes"]),
                              _("Save the weights and the names together again."))
    return model.to(device).eval(), names


def predict_names(model: nn.Module, X: torch.Tensor, class_names: Sequence[str]) -> list[str]:
    """Class names for a batch: eval mode, no autograd (``helpers.plots.predict``), then a lookup.

    >>> predict_names(model, data.test.X[:3], data.class_names)
    ['0', '7', '3']
    """
    return [class_names[int(i)] for i in predict(model, X).cpu()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m helpers.deploy",
        description=_("Load deployed TinyResNet weights in a fresh process and predict the test split "
                      "of the bundled digits."))
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help=_("weights (.safetensors/.pt, with a .json sidecar), a training "
                               "checkpoint, or a DCP checkpoint folder (pipeline --checkpoint-format "
                               "dcp)"))
    for name, what in (("num_classes", N_("class count")), ("width", N_("TinyResNet width")),
                       ("depth", N_("TinyResNet blocks"))):
        parser.add_argument(f"--{name.replace('_', '-')}", type=ascii_int,
                            help=_("{what} (default: from the metadata)").format(what=_(what)))
    parser.add_argument("--device", default="cpu", help=_("cpu, cuda, cuda:N or mps (default cpu)"))
    parser.add_argument("--show", type=whole_number(0, 10_000), default=8,
                        help=_("predictions to print (default 8)"))
    parser.add_argument("--predictions", type=Path,
                        help=_("also write every test prediction (class indices) to this JSON file"))
    parser.add_argument("--min-accuracy", type=float, default=0.0,
                        help=_("exit with status 1 when the test accuracy is lower (default 0)"))
    return parser


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers that hold NaN or infinity (a diverged training).

    >>> nonfinite_tensors(TinyResNet(4))
    []
    """
    return [name for name, t in unwrap_model(model).state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _digits_input(model: nn.Module, X: torch.Tensor) -> torch.Tensor:
    """The 1-channel digits as the model's stem expects them (grey repeated for RGB models)."""
    channels = tiny_resnet_config(model)["in_channels"]
    return X if channels == X.shape[1] else X.expand(-1, channels, -1, -1)


def main(argv: list[str] | None = None) -> int:
    """The command line: load, predict the test split, print accuracy and a few predictions."""
    tolerate_narrow_console()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(_("error: interrupted (Ctrl-C)"), file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    from helpers.data import load_digits
    from helpers.settings import MAX_CLASSES, MIN_CLASSES, SettingsError, parse_device

    parser = build_parser()
    args = parser.parse_args(argv)
    refuse_bad_paths(parser, {"--checkpoint": args.checkpoint, "--predictions": args.predictions})
    try:
        device = parse_device(args.device, source="--device")
        model, names = load_for_inference(args.checkpoint, device=device,
                                          num_classes=args.num_classes, width=args.width,
                                          depth=args.depth)
        bad = nonfinite_tensors(model)
        if bad:
            raise CheckpointError(args.checkpoint, _("{n_bad} tensor(s) hold NaN or infinite values "
                                                     "({bad}); its predictions would mean nothing").format(
                                                       n_bad=len(bad), bad=', '.join(bad[:3])),
                                  _("The training diverged (try a lower learning rate); deploy an "
                                    "earlier checkpoint, e.g. best.pt."))
    except (SettingsError, CheckpointError, OSError, ValueError) as exc:
        print(_("error: {message}").format(message=one_line(exc)), file=sys.stderr)
        return 2
    except Exception as exc:  # anything else a strange file causes: still one line
        print(_("error: cannot load {checkpoint}: {type}: {message}").format(
                  checkpoint=args.checkpoint, type=type(exc).__name__, message=one_line(exc)),
              file=sys.stderr)
        return 2
    config = tiny_resnet_config(model)
    # The bundled digits have 2..10 classes; a model for more (or fewer) is scored on what exists.
    data_classes = min(max(config["num_classes"], MIN_CLASSES), MAX_CLASSES)
    test = load_digits(data_classes, device=device).test
    predicted = predict(model, _digits_input(model, test.X))
    accuracy = float((predicted == test.y).float().mean())
    shown = max(0, min(args.show, len(test.y)))

    def name(index: int) -> str:
        return printable(names[index]) if index < len(names) else str(index)

    print(_("loaded {name}: TinyResNet, {classes} classes, width {width}, depth "
            "{depth}; eval mode: {eval_mode}").format(
              name=printable(args.checkpoint.name), classes=config["num_classes"], width=config["width"],
              depth=config["depth"], eval_mode=not model.training))
    if config["in_channels"] != 1:
        print(_("note: the model takes {channels} channels; the grey digits are repeated to fill "
                "them").format(
                  channels=config['in_channels']))
    if data_classes != config["num_classes"]:
        print(_("note: the model has {classes} classes; the digits test split has {data_classes} (digits "
                "0..{last})").format(
                  classes=config['num_classes'], data_classes=data_classes, last=data_classes - 1))
    print(_("test accuracy {accuracy} on {images} images").format(
              accuracy=measured(accuracy), images=len(test.y)))
    if shown:
        print(_("first {shown} predicted: {digits}").format(
                  shown=shown, digits=' '.join(name(int(i)) for i in predicted[:shown])))
        print(_("first {shown} true:      {digits}").format(
                  shown=shown, digits=' '.join(name(int(i)) for i in test.y[:shown])))
    if args.predictions is not None:
        text = json.dumps({"class_names": names, "accuracy": accuracy,
                           "predicted": predicted.tolist()}) + "\n"
        try:
            _atomic_write(args.predictions, lambda f: f.write(text.encode()))
        except CheckpointError as exc:
            print(_("error: cannot write --predictions: {message}").format(message=one_line(exc)),
                  file=sys.stderr)
            return 2
    if accuracy < args.min_accuracy:
        print(_("error: test accuracy {accuracy:.2f} is below --min-accuracy {min_accuracy}").format(
                  accuracy=accuracy, min_accuracy=args.min_accuracy),
              file=sys.stderr)
        return 1
    return 0


__all__ = ["DeployInfo", "check_class_names", "check_config", "load_for_inference",
           "nonfinite_tensors", "predict_names",
           "read_deploy_info", "save_for_deployment", "sidecar_path", "tiny_resnet_config"]


if __name__ == "__main__":
    raise SystemExit(main())
