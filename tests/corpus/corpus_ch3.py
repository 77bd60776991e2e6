"""Chapter 3 answers as learners write them: wrong ones with what the message must name, right
ones written in different ways, and small mutations of the reference solutions."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from harness import mutation, right, wrong
from torch import nn

from helpers.checkpoint import save_checkpoint
from helpers.data import load_digits
from helpers.exercises.ch3 import SOLUTIONS
from helpers.models import TinyResNet

CHAPTER = 3
NUM_CLASSES = 6

CHECKS = {
    1: "check_save_for_inference(save_for_inference, wrapped_net, x, runs / 'exercise1.pt')",
    2: "from helpers.exercises.ch3 import check_prefix_stripper\n\n"
       "check_prefix_stripper(strip_module_prefix)",
    3: "from helpers.exercises.ch3 import check_resume\n\ncheck_resume(resume)",
    4: "from helpers.exercises.ch3 import check_ready_for_inference\n\n"
       "check_ready_for_inference(best_net, folder / 'best.pt', settings.device)",
}
CHECKS[1] = "from helpers.exercises.ch3 import check_save_for_inference\n\n" + CHECKS[1]


def _model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyResNet(NUM_CLASSES, width=32, depth=1, dropout=0.1)
    with torch.no_grad():  # "trained": BatchNorm statistics away from their defaults
        for name, tensor in model.state_dict().items():
            if "running" in name:
                tensor.uniform_(0.5, 1.5)
    return model


def namespace() -> dict:
    """What chapter 3 has defined when its exercises start (section 8's run: best.pt, last.pt)."""
    runs = Path(tempfile.mkdtemp(prefix="corpus-ch3-"))
    folder = runs / "train"
    folder.mkdir()
    net = _model(0)
    save_checkpoint(folder / "best.pt", model=_model(1), epoch=1)
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01)
    save_checkpoint(folder / "last.pt", model=net, optimizer=optimizer, epoch=3)
    return {"torch": torch, "nn": nn, "copy": copy, "Path": Path, "TinyResNet": TinyResNet,
            "settings": SimpleNamespace(num_classes=NUM_CLASSES, device="cpu"), "runs": runs,
            "folder": folder, "net": net, "x": load_digits(NUM_CLASSES).val.X[:8],
            "wrapped_net": nn.DataParallel(copy.deepcopy(net))}


def _save(body: str) -> str:
    return f"def save_for_inference(model, path):\n    {body}"


def _strip(body: str) -> str:
    return f"def strip_module_prefix(state_dict):\n    {body}"


RESUME = """
def resume(path, model, optimizer, scheduler):
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    return checkpoint["epoch"] + 1
"""
BEST = ("best_net = TinyResNet(settings.num_classes, width=32, depth=1, dropout=0.1)\n"
        "best = torch.load(folder / 'best.pt', map_location=settings.device, weights_only=True)\n")

ANSWERS = [
    # Exercise 1: save a wrapped model for inference --------------------------------------------
    wrong(1, "wrapper-state-dict", _save("torch.save(model.state_dict(), path)"),
          "start with 'module.'", "model.module.state_dict()"),
    wrong(1, "whole-wrapper", _save("torch.save(model, path)"), "you saved the wrapper",
          "state_dict()"),
    wrong(1, "whole-inner-model", _save("torch.save(model.module, path)"),
          "the whole TinyResNet", "state_dict()"),
    wrong(1, "state-dict-without-call", _save("torch.save(model.module.state_dict, path)"),
          "model.module.state_dict, the method itself", "state_dict()"),
    wrong(1, "path-ignored", _save("torch.save(model.module.state_dict(), 'model.pt')"),
          "did not write exercise1.pt"),
    wrong(1, "dict-around", _save("torch.save({'model': model.module.state_dict()}, path)"),
          "around the weights", "state_dict itself"),
    wrong(1, "fresh-model", _save("torch.save(TinyResNet(settings.num_classes, width=32, depth=1)"
                                  ".state_dict(), path)"), "different outputs"),
    wrong(1, "weights-only-keys", _save("torch.save({k: v for k, v in model.module.state_dict()"
                                        ".items() if k.endswith('weight')}, path)"),
          "keys missing from the file"),
    right(1, "module-attribute", _save("torch.save(model.module.state_dict(), path)")),
    right(1, "strip-prefix", _save("state = {k.removeprefix('module.'): v for k, v in "
                                   "model.state_dict().items()}\n    torch.save(state, path)")),
    right(1, "consume-prefix", """
        from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present


        def save_for_inference(model, path):
            state = model.state_dict()
            consume_prefix_in_state_dict_if_present(state, "module.")
            torch.save(state, path)
        """),
    mutation(SOLUTIONS, 1, "no-call", "state_dict()", "state_dict", "the method itself"),
    mutation(SOLUTIONS, 1, "no-unwrap", "unwrap_model(model).state_dict()", "model.state_dict()",
             "start with 'module.'"),

    # Exercise 2: fix the prefix stripper -------------------------------------------------------
    wrong(2, "seed-recipe", _strip("return {k[7:]: v for k, v in state_dict.items()}"),
          "cut 7 characters"),
    wrong(2, "replace", _strip("return {k.replace('module.', ''): v for k, v in state_dict.items()}"),
          "from inside the key"),
    wrong(2, "lstrip", _strip("return {k.lstrip('module.'): v for k, v in state_dict.items()}"),
          "lstrip"),
    wrong(2, "in-place-no-return", _strip("for k in list(state_dict):\n"
                                          "        state_dict[k.removeprefix('module.')] = "
                                          "state_dict.pop(k)"), "returned None"),
    wrong(2, "split-first-dot", _strip("return {k.split('.', 1)[1]: v for k, v in state_dict.items()}"),
          "up to the first dot"),
    wrong(2, "prefix-without-dot", _strip("return {(k[7:] if k.startswith('module') else k): v\n"
                                          "            for k, v in state_dict.items()}"),
          "does not start with 'module.'"),
    wrong(2, "all-or-nothing", _strip("if all(k.startswith('module.') for k in state_dict):\n"
                                      "        return {k[7:]: v for k, v in state_dict.items()}\n"
                                      "    return dict(state_dict)"),
          "n_averaged", "left the key as it was"),
    wrong(2, "drops-plain-keys", _strip("return {k[7:]: v for k, v in state_dict.items() "
                                        "if k.startswith('module.')}"), "returned 0 keys for 3"),
    wrong(2, "list-of-keys", _strip("return [k.removeprefix('module.') for k in state_dict]"),
          "returned a list", "return a dict"),
    right(2, "regex", "import re\n\n\n" + _strip(
        "return {re.sub(r'^module\\.', '', k): v for k, v in state_dict.items()}")),
    right(2, "consume-and-return", """
        from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present


        def strip_module_prefix(state_dict):
            state_dict = dict(state_dict)
            consume_prefix_in_state_dict_if_present(state_dict, "module.")
            return state_dict
        """),
    right(2, "loop", _strip("new = {}\n    for key, value in state_dict.items():\n"
                            "        if key.startswith('module.'):\n"
                            "            key = key[len('module.'):]\n"
                            "        new[key] = value\n    return new")),
    mutation(SOLUTIONS, 2, "no-dot", 'removeprefix("module.")', 'removeprefix("module")',
             "without the dot"),

    # Exercise 3: resume a run ------------------------------------------------------------------
    wrong(3, "scheduler-forgotten", RESUME.replace(
        '    scheduler.load_state_dict(checkpoint["scheduler"])\n', ""),
        "scheduler was not restored", "scheduler.load_state_dict"),
    wrong(3, "optimizer-forgotten", RESUME.replace(
        '    optimizer.load_state_dict(checkpoint["optimizer"])\n', ""),
        "optimizer has no state", "optimizer.load_state_dict"),
    wrong(3, "saved-epoch", RESUME.replace('checkpoint["epoch"] + 1', 'checkpoint["epoch"]'),
          "the epoch stored in the checkpoint", "+ 1"),
    wrong(3, "weights-only-false", RESUME.replace("weights_only=True", "weights_only=False"),
          "weights_only=False", "weights_only=True"),
    wrong(3, "whole-checkpoint-into-model", RESUME.replace('load_state_dict(checkpoint["model"])',
                                                           "load_state_dict(checkpoint)"),
          "checkpoint['model']"),
    wrong(3, "no-return", RESUME.replace('    return checkpoint["epoch"] + 1\n', ""),
          "returned None", "int"),
    wrong(3, "new-optimizer", RESUME.replace(
        '    optimizer.load_state_dict(checkpoint["optimizer"])\n',
        '    optimizer = torch.optim.AdamW(model.parameters())\n'
        '    optimizer.load_state_dict(checkpoint["optimizer"])\n'), "optimizer has no state"),
    wrong(3, "extra-scheduler-step", RESUME.replace(
        '    return checkpoint', '    scheduler.step()\n    return checkpoint'),
        "scheduler was not restored", "last_epoch 3"),
    right(3, "default-weights-only", RESUME.replace(', weights_only=True', '')),
    right(3, "load-checkpoint-helper", """
        from helpers.checkpoint import load_checkpoint


        def resume(path, model, optimizer, scheduler):
            info = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
            return info["start_epoch"]
        """),
    mutation(SOLUTIONS, 3, "unsafe-load", "weights_only=True", "weights_only=False",
             "weights_only=False"),
    mutation(SOLUTIONS, 3, "no-plus-one", '["epoch"] + 1', '["epoch"]',
             "the epoch stored in the checkpoint"),
    mutation(SOLUTIONS, 3, "no-scheduler", '    scheduler.load_state_dict(checkpoint["scheduler"])\n',
             "", "scheduler was not restored"),

    # Exercise 4: the best model, ready for inference -------------------------------------------
    wrong(4, "no-eval", BEST + "best_net.load_state_dict(best['model'])", "training mode",
          "model.eval()"),
    wrong(4, "eval-without-call", BEST + "best_net.load_state_dict(best['model'])\n"
          "best_net = best_net.eval", "the () are missing"),
    wrong(4, "last-pt", BEST.replace("best.pt", "last.pt") + "best_net.load_state_dict(best['model'])\n"
          "best_net.eval()", "last.pt", "best.pt"),
    wrong(4, "nothing-loaded", "best_net = TinyResNet(settings.num_classes, width=32, depth=1, "
          "dropout=0.1).eval()", "not loaded", "load_state_dict(best['model'])"),
    wrong(4, "the-dict", "best_net = torch.load(folder / 'best.pt', weights_only=True)",
          "best_net is a dict", "load best['model']"),
    wrong(4, "deeper-net", BEST.replace("depth=1", "depth=2")
          + "best_net.load_state_dict(best['model'], strict=False)\nbest_net.eval()",
          "lacks", "like section 8's"),
    wrong(4, "head-only-eval", BEST + "best_net.load_state_dict(best['model'])\nbest_net.fc.eval()",
          "training mode", "model.eval()"),
    right(4, "eval-first", "best_net = TinyResNet(settings.num_classes, width=32, depth=1).eval()\n"
          "best_net.load_state_dict(torch.load(folder / 'best.pt', weights_only=True)['model'])\n"
          "best_net = best_net.to(settings.device)"),
    right(4, "load-then-chain", BEST + "best_net.load_state_dict(best['model'])\n"
          "best_net = best_net.to(settings.device).eval().requires_grad_(False)"),
    mutation(SOLUTIONS, 4, "no-eval", ".eval()", "", "training mode"),
]
