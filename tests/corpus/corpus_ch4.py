"""Chapter 4 answers as learners write them: wrong ones with what the message must name, right
ones written in different ways, and small mutations of the reference solutions."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from harness import mutation, right, wrong
from torch import nn

from helpers.data import load_digits
from helpers.exercises.ch4 import SOLUTIONS
from helpers.models import TinyResNet
from helpers.training import History, fit

CHAPTER = 4
NUM_CLASSES, OLD_CLASSES = 6, 3
_IMPORT = "from helpers.exercises.ch4 import {}\n\n"
CHECKS = {
    1: _IMPORT.format("check_extended_model")
    + "check_extended_model(extended, old_model, num_classes=settings.num_classes,\n"
      "                     example=data.test.X[:16])",
    2: _IMPORT.format("check_predict_function")
    + "check_predict_function(predict_digits, deployed, test_cpu.X[:32], names)",
    3: _IMPORT.format("check_resume_training") + "check_resume_training(resume_training)",
    4: _IMPORT.format("check_torchrun_command")
    + "check_torchrun_command(command, processes=4, num_classes=settings.num_classes, epochs=5,\n"
      "                       checkpoint_dir='runs/ch4/ex4')",
    5: _IMPORT.format("check_cautious_predict")
    + "check_cautious_predict(cautious_predict, deployed, test_cpu.X)",
}


def _trained(num_classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyResNet(num_classes, width=8, depth=1)
    with torch.no_grad():  # "trained": BatchNorm statistics away from their defaults
        for name, tensor in model.state_dict().items():
            if "running" in name:
                tensor.uniform_(0.5, 1.5)
        model.fc.weight.mul_(8)  # confident on some digits, unsure on others
    return model.eval()


def namespace() -> dict:
    """What chapter 4 has defined when its exercises start."""
    data = load_digits(NUM_CLASSES)
    return {"torch": torch, "nn": nn, "TinyResNet": TinyResNet, "fit": fit, "History": History,
            "settings": SimpleNamespace(num_classes=NUM_CLASSES, device="cpu"),
            "old_classes": OLD_CLASSES, "arch": {"width": 8, "depth": 1},
            "old_model": _trained(OLD_CLASSES, 0), "deployed": _trained(NUM_CLASSES, 1),
            "data": data, "test_cpu": data.test, "names": list(data.class_names)}


EXTEND = ("extended = TinyResNet(settings.num_classes, **arch).to(settings.device)\n"
          "backbone = {k: v for k, v in old_model.state_dict().items() if not k.startswith('fc.')}\n"
          "extended.load_state_dict(backbone, strict=False)\n")
ROWS = ("with torch.no_grad():\n"
        "    extended.fc.weight[:old_classes] = old_model.fc.weight\n"
        "    extended.fc.bias[:old_classes] = old_model.fc.bias\n")


def _predict(body: str) -> str:
    return f"def predict_digits(model, X, class_names):\n    {body}"


PREDICT = """
def predict_digits(model, X, class_names):
    model.eval()
    with torch.inference_mode():
        indices = model(X).argmax(dim=1)
    return [class_names[i] for i in indices.tolist()]
"""
RESUME = """
from helpers.checkpoint import load_checkpoint


def resume_training(path, model, optimizer, scheduler, data, epochs):
    state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
    return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
               start_epoch=state["start_epoch"], history=History.from_dict(state["history"]),
               progress=False)
"""
RUN = ("command = (f'torchrun --standalone --nproc-per-node=4 -m helpers.pipeline --device cpu '\n"
       "           f'--num-classes {settings.num_classes} --epochs 5 --checkpoint-dir runs/ch4/ex4')")


def _cautious(body: str) -> str:
    return f"def cautious_predict(logits, threshold=0.9):\n    {body}"


CAUTIOUS = ("confidence, predicted = logits.softmax(dim=1).max(dim=1)\n"
            "    return torch.where(confidence >= threshold, predicted, -1)")

ANSWERS = [
    # Exercise 1: more classes, same knowledge --------------------------------------------------
    wrong(1, "fresh-model", "extended = TinyResNet(settings.num_classes, **arch)",
          "backbone weights differ", "not loaded"),
    wrong(1, "rows-not-copied", EXTEND, "first 3 rows", "extended.fc.weight[:3]"),
    wrong(1, "bias-not-copied", EXTEND + ROWS.split("    extended.fc.bias")[0],
          "not those of its bias", "extended.fc.bias[:3]"),
    wrong(1, "deeper", EXTEND.replace("**arch", "width=8, depth=2") + ROWS,
          "tensors the trained model lacks", "blocks.1", "**arch"),
    wrong(1, "ten-classes", EXTEND.replace("settings.num_classes", "10") + ROWS,
          "outputs 10 classes"),
    wrong(1, "rows-at-the-end", EXTEND + ROWS.replace("[:old_classes]", "[-old_classes:]"),
          "first 3 rows", "went to rows 3"),
    wrong(1, "new-head-on-copy", "import copy\n\nextended = copy.deepcopy(old_model)\n"
          "extended.fc = nn.Linear(extended.fc.in_features, settings.num_classes)",
          "first 3 rows"),
    wrong(1, "old-model-as-is", "extended = old_model", "outputs 3 classes", "asks for 6"),
    right(1, "then-a-training-forward", EXTEND + ROWS + "extended.train()\n"
          "_ = extended(data.train.X[:32])", "BatchNorm statistics moved"),
    right(1, "copy-and-new-head", "import copy\n\nextended = copy.deepcopy(old_model)\n"
          "head = nn.Linear(old_model.fc.in_features, settings.num_classes)\n"
          "with torch.no_grad():\n    head.weight[:old_classes].copy_(old_model.fc.weight)\n"
          "    head.bias[:old_classes].copy_(old_model.fc.bias)\nextended.fc = head"),
    mutation(SOLUTIONS, 1, "no-bias", "\n    extended.fc.bias[:old_classes] = old_model.fc.bias",
             "", "not those of its bias"),
    mutation(SOLUTIONS, 1, "wrong-slice", "weight[:old_classes]", "weight[old_classes:]",
             "bias are copied, but not those of its weight"),

    # Exercise 2: a predict function for deployment ---------------------------------------------
    wrong(2, "no-eval", PREDICT.replace("    model.eval()\n", ""), "training mode", "model.eval()"),
    wrong(2, "eval-without-call", PREDICT.replace("model.eval()", "model.eval"), "training mode",
          "model.eval alone does nothing"),
    wrong(2, "autograd-on", _predict("model.eval()\n    indices = model(X).argmax(dim=1)\n"
                                     "    return [class_names[i] for i in indices.tolist()]"),
          "autograd", "torch.inference_mode()"),
    wrong(2, "argmax-over-batch", PREDICT.replace("argmax(dim=1)", "argmax(dim=0)"),
          "6 names for 32 images", "dim=0"),
    wrong(2, "indices", PREDICT.replace("[class_names[i] for i in indices.tolist()]",
                                        "indices.tolist()"), "not names", "class_names"),
    wrong(2, "tensor", PREDICT.replace("[class_names[i] for i in indices.tolist()]", "indices"),
          "tensor of shape (32,)", "class names"),
    wrong(2, "names-from-indices", PREDICT.replace("class_names[i]", "str(i)"),
          "instead of looking them up"),
    wrong(2, "no-return", PREDICT.replace("    return [class_names[i] for i in indices.tolist()]\n",
                                          "    names = [class_names[i] for i in indices.tolist()]\n"),
          "returned a NoneType"),
    right(2, "no-grad-softmax", _predict("model.eval()\n    with torch.no_grad():\n"
                                         "        probs = model(X).softmax(dim=1)\n"
                                         "    return [class_names[int(i)] for i in probs.argmax(1)]")),
    right(2, "mode-restored", _predict("was_training = model.training\n    model.eval()\n"
                                       "    with torch.inference_mode():\n"
                                       "        logits = model(X)\n    model.train(was_training)\n"
                                       "    return [class_names[i] for i in logits.argmax(dim=1).tolist()]")),
    mutation(SOLUTIONS, 2, "dim-0", "argmax(dim=1)", "argmax(dim=0)", "dim=0"),
    mutation(SOLUTIONS, 2, "no-eval", "    model.eval()\n", "", "training mode"),

    # Exercise 3: resume to a given epoch count -------------------------------------------------
    wrong(3, "no-history", RESUME.replace(", history=History.from_dict(state[\"history\"])", ""),
          "epochs before the checkpoint are missing", "History.from_dict"),
    wrong(3, "one-epoch-later", RESUME.replace('state["start_epoch"]', 'state["start_epoch"] + 1'),
          "lists the epochs [1, 2, 4]"),
    wrong(3, "scheduler-not-restored", RESUME.replace(", scheduler=scheduler)", ")"),
          "scheduler"),
    wrong(3, "per-batch-schedule",
          RESUME.replace("scheduler=scheduler,\n", 'scheduler=scheduler, scheduler_step="batch",\n'),
          "steps once per epoch", "scheduler_step='batch'"),
    wrong(3, "no-return", RESUME.replace("    return fit(", "    fit("), "returned None"),
    wrong(3, "epochs-typed-in", RESUME.replace("epochs=epochs", "epochs=6"),
          "ran out of steps"),
    wrong(3, "torch-load-no-rng", """
        def resume_training(path, model, optimizer, scheduler, data, epochs):
            state = torch.load(path, weights_only=True)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                       start_epoch=state["epoch"] + 1,
                       history=History.from_dict(state["history"]), progress=False)
        """, "final weights differ", "random state"),
    wrong(3, "from-scratch", RESUME.replace('start_epoch=state["start_epoch"], ', ""),
          "epoch"),
    right(3, "epoch-plus-one", RESUME.replace('state["start_epoch"]', 'state["epoch"] + 1')),
    right(3, "history-first", """
        from helpers.checkpoint import load_checkpoint


        def resume_training(path, model, optimizer, scheduler, data, epochs):
            info = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
            history = History.from_dict(info["history"])
            history = fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                          history=history, start_epoch=info["start_epoch"])
            return history
        """),
    mutation(SOLUTIONS, 3, "no-history", ", history=history", "",
             "epochs before the checkpoint are missing"),

    # Exercise 4: a command for four processes --------------------------------------------------
    wrong(4, "options-after-module", "command = (f'torchrun -m helpers.pipeline --standalone "
          "--nproc-per-node=4 --device cpu '\n           f'--num-classes {settings.num_classes} "
          "--epochs 5 --checkpoint-dir runs/ch4/ex4')", "come after the script",
          "torchrun's options (--standalone --nproc-per-node=4), then -m helpers.pipeline"),
    wrong(4, "two-processes", RUN.replace("=4", "=2"), "--nproc-per-node is 2", "4"),
    wrong(4, "no-device", RUN.replace("--device cpu ", ""), "--device is 'auto'", "--device cpu"),
    wrong(4, "ten-classes", RUN.replace("{settings.num_classes}", "10"), "--num-classes is 10"),
    wrong(4, "three-epochs", RUN.replace("--epochs 5", "--epochs 3"), "--epochs is 3"),
    wrong(4, "other-folder", RUN.replace("runs/ch4/ex4", "runs/ex4"), "--checkpoint-dir is runs/ex4"),
    wrong(4, "no-torchrun", "command = (f'python -m helpers.pipeline --device cpu "
          "--num-classes {settings.num_classes} '\n           '--epochs 5 --checkpoint-dir "
          "runs/ch4/ex4')", "start it with torchrun"),
    wrong(4, "script-path", RUN.replace("-m helpers.pipeline", "helpers/pipeline.py"),
          "as a script file", "-m helpers.pipeline"),
    wrong(4, "no-f-string", RUN.replace("f'--num", "'--num"), "put an f in front"),
    wrong(4, "two-nodes", RUN.replace("--standalone", "--nnodes=2"), "waits for other machines"),
    right(4, "underscores-and-list", "command = ['torchrun', '--nproc_per_node', '4', '--standalone',\n"
          "           '-m', 'helpers.pipeline', '--device=cpu',\n"
          "           f'--num-classes={settings.num_classes}', '--epochs=5',\n"
          "           '--checkpoint-dir=runs/ch4/ex4']"),
    right(4, "python-m-torch-distributed", RUN.replace("'torchrun ", "'python -m torch.distributed.run ")),
    mutation(SOLUTIONS, 4, "no-device", "--device cpu ", "", "--device is 'auto'"),
    mutation(SOLUTIONS, 4, "two-processes", "--nproc-per-node=4", "--nproc-per-node=2",
             "--nproc-per-node is 2"),

    # Exercise 5: a cautious prediction that exports --------------------------------------------
    wrong(5, "softmax-over-batch", _cautious(CAUTIOUS.replace("softmax(dim=1)", "softmax(0)")),
          "dim=0, the batch", "softmax(dim=1)"),
    wrong(5, "never-unsure", _cautious("return logits.argmax(dim=1)"), "no -1"),
    wrong(5, "batch-maximum", _cautious("confidence = logits.softmax(dim=1).max()\n"
                                        "    return torch.where(confidence >= threshold, "
                                        "logits.argmax(dim=1), -1)"),
          "whole batch's maximum", "max(dim=1)"),
    wrong(5, "strictly-greater", _cautious(CAUTIOUS.replace(">=", ">")), "exactly 0.5", "not >"),
    wrong(5, "inverted", _cautious(CAUTIOUS.replace(">=", "<")), "wrong way round"),
    wrong(5, "python-loop", _cautious("probs = logits.softmax(dim=1)\n    out = probs.argmax(dim=1)\n"
                                      "    for i in range(len(out)):\n"
                                      "        if probs[i].max() < threshold:\n"
                                      "            out[i] = -1\n    return out"),
          "torch.export could not trace", "torch.where"),
    wrong(5, "returns-confidence", _cautious(CAUTIOUS.replace("predicted, -1", "confidence, -1.0")),
          "instead of"),
    wrong(5, "list-of-rows", _cautious("return [int(row.argmax()) if row.softmax(0).max() >= threshold "
                                       "else -1 for row in logits]"), "returned a list"),
    right(5, "masked-fill", _cautious("probs = torch.softmax(logits, dim=-1)\n"
                                      "    best = probs.max(dim=-1)\n"
                                      "    return best.indices.masked_fill(best.values < threshold, -1)")),
    right(5, "full-like", _cautious("probs = logits.softmax(1)\n"
                                    "    predicted = probs.argmax(1)\n"
                                    "    unsure = probs.amax(1) < threshold\n"
                                    "    return torch.where(unsure, torch.full_like(predicted, -1), "
                                    "predicted)")),
    mutation(SOLUTIONS, 5, "dim-0", "softmax(dim=1)", "softmax(dim=0)", "dim=0, the batch"),
    mutation(SOLUTIONS, 5, "greater", ">=", ">", "not >"),
    mutation(SOLUTIONS, 5, "zero", "predicted, -1)", "predicted, 0)", "instead of"),
]
