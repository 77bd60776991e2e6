"""Chapter 2 answers as learners write them: wrong ones with what the message must name, right
ones written in different ways, and small mutations of the reference solutions."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from harness import mutation, right, wrong
from torch import nn
from torchvision.models import resnet18

from helpers.exercises.ch2 import SOLUTIONS
from helpers.seeding import seed_everything

CHAPTER = 2
NUM_CLASSES = 6

CHECKS = {
    1: "from helpers.exercises.ch2 import check_new_head\n\n"
       "check_new_head(exercise_net, num_classes=settings.num_classes)",
    2: "from helpers.exercises.ch2 import check_frozen_except\n\n"
       "check_frozen_except(finetune_net, trainable=('layer4', 'fc'))",
    3: "from helpers.exercises.ch2 import check_logits_and_features\n\n"
       "check_logits_and_features(exercise_model, num_classes=settings.num_classes,\n"
       "                          extra_dim=extra_dim, feature_dim=512)",
    4: "from helpers.exercises.ch2 import check_loaded_checkpoint\n\n"
       "check_loaded_checkpoint(loaded, resnet18_path, num_classes=settings.num_classes)",
}


def namespace() -> dict:
    """What chapter 2 has defined when its exercises start."""
    runs = Path(tempfile.mkdtemp(prefix="corpus-ch2-"))
    seed_everything(2)
    path = runs / "resnet18_1000_classes.pt"
    torch.save(resnet18(weights=None).state_dict(), path)
    return {"torch": torch, "nn": nn, "resnet18": resnet18, "runs": runs, "resnet18_path": path,
            "seed_everything": seed_everything,
            "settings": SimpleNamespace(num_classes=NUM_CLASSES, device="cpu")}


NET = "exercise_net = resnet18(weights=None).to(settings.device)\n"
FINETUNE = ("finetune_net = resnet18(weights=None, num_classes=settings.num_classes)\n"
            "finetune_net = finetune_net.to(settings.device)\n")


def _model(init: str, forward: str) -> str:
    return f"""
class LogitsFeaturesExtra(nn.Module):
    def __init__(self, num_classes, extra_dim):
        super().__init__()
        {init}

    def forward(self, x, extra):
        {forward}


extra_dim = 2
exercise_model = LogitsFeaturesExtra(settings.num_classes, extra_dim).to(settings.device)
"""


_INIT = """self.backbone = resnet18(weights=None)
        feature_dim = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(feature_dim + extra_dim, num_classes)"""
_FWD = """features = self.backbone(x)
        logits = self.head(torch.cat([features, extra], dim=1))
        return {}"""
LOAD_B = ("loaded = resnet18(weights=None, num_classes=settings.num_classes)\n"
          "saved = torch.load(resnet18_path, map_location='cpu', weights_only=True)\n")

ANSWERS = [
    # Exercise 1: a new head --------------------------------------------------------------------
    wrong(1, "512-typed-in", NET + "exercise_net.fc = nn.Linear(512, settings.num_classes)",
          "typed in", "96 features", "exercise_net.fc.in_features"),
    wrong(1, "resnet50-size", NET + "exercise_net.fc = nn.Linear(2048, settings.num_classes)",
          "expects 2048 input features", "delivers 512"),
    wrong(1, "ten-classes", NET + "exercise_net.fc = nn.Linear(exercise_net.fc.in_features, 10)",
          "outputs 10 classes", "asks for 6"),
    wrong(1, "identity", NET + "exercise_net.fc = nn.Identity()", "an Identity", "nn.Linear"),
    wrong(1, "out-features-set", NET + "exercise_net.fc.out_features = settings.num_classes",
          "outputs 1000 classes"),
    wrong(1, "out-instead-of-in", NET + "exercise_net.fc = nn.Linear(exercise_net.fc.out_features, "
                                        "settings.num_classes)",
          "expects 1000 input features", "delivers 512"),
    wrong(1, "softmax-head", NET + "exercise_net.fc = nn.Sequential(\n"
          "    nn.Linear(exercise_net.fc.in_features, settings.num_classes), nn.Softmax(dim=1))",
          "probabilities", "logits"),
    right(1, "replace-head", NET + "from helpers.modify import replace_head\n\n"
          "replace_head(exercise_net, settings.num_classes)"),
    right(1, "dropout-sequential", NET + "in_features = exercise_net.fc.in_features\n"
          "exercise_net.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(in_features, "
          "settings.num_classes))", "Sequential ending in Linear(512 -> 6)"),
    right(1, "two-lines", NET + "n_features = exercise_net.fc.in_features\n"
          "new_head = nn.Linear(n_features, settings.num_classes)\n"
          "exercise_net.fc = new_head.to(settings.device)"),
    mutation(SOLUTIONS, 1, "typed-512", "nn.Linear(exercise_net.fc.in_features,", "nn.Linear(512,",
             "typed in"),

    # Exercise 2: train only layer4 and the head ------------------------------------------------
    wrong(2, "no-unfreeze", FINETUNE + "from helpers.modify import freeze\n\nfreeze(finetune_net)",
          "frozen but should train: layer4, fc"),
    wrong(2, "head-forgotten", FINETUNE + "from helpers.modify import freeze, unfreeze\n\n"
          "freeze(finetune_net)\nunfreeze(finetune_net.layer4)", "frozen but should train: fc"),
    wrong(2, "stem-left-trainable", FINETUNE + "for part in (finetune_net.layer1, finetune_net.layer2, "
          "finetune_net.layer3):\n    part.requires_grad_(False)",
          "still trainable but should be frozen: conv1, bn1"),
    wrong(2, "attribute-not-method", FINETUNE + "finetune_net.requires_grad = False\n"
          "finetune_net.layer4.requires_grad_(True)\nfinetune_net.fc.requires_grad_(True)",
          "nothing is frozen", "requires_grad_(False)"),
    wrong(2, "comparison", FINETUNE + "for p in finetune_net.parameters():\n    p.requires_grad == False",
          "nothing is frozen", "compares instead of assigning"),
    wrong(2, "eval-instead", FINETUNE + "finetune_net.eval()", "nothing is frozen", "eval()"),
    wrong(2, "layer3-not-layer4", FINETUNE + "finetune_net.requires_grad_(False)\n"
          "finetune_net.layer3.requires_grad_(True)\nfinetune_net.fc.requires_grad_(True)",
          "still trainable but should be frozen: layer3", "frozen but should train: layer4"),
    wrong(2, "by-name-without-fc", FINETUNE + "for name, p in finetune_net.named_parameters():\n"
          "    p.requires_grad = name.startswith('layer4')", "frozen but should train: fc"),
    right(2, "requires-grad-chain", FINETUNE + "finetune_net.requires_grad_(False)\n"
          "finetune_net.layer4.requires_grad_(True)\nfinetune_net.fc.requires_grad_(True)"),
    right(2, "by-name", FINETUNE + "for name, p in finetune_net.named_parameters():\n"
          "    p.requires_grad = name.startswith(('layer4.', 'fc.'))"),
    mutation(SOLUTIONS, 2, "no-fc", "(finetune_net.layer4, finetune_net.fc)", "(finetune_net.layer4,)",
             "frozen but should train: fc"),

    # Exercise 3: logits, features and an extra input -------------------------------------------
    wrong(3, "logits-only", _model(_INIT, _FWD.format("logits")), "tensor of shape (3, 6)",
          "(logits, features)"),
    wrong(3, "swapped", _model(_INIT, _FWD.format("features, logits")), "(features, logits)",
          "in the order (logits, features)"),
    wrong(3, "extra-ignored", _model(_INIT.replace("feature_dim + extra_dim", "feature_dim"),
                                     "features = self.backbone(x)\n        "
                                     "return self.head(features), features"),
          "does not change the logits", "torch.cat"),
    wrong(3, "head-too-small", _model(_INIT.replace("feature_dim + extra_dim", "feature_dim"),
                                      _FWD.format("logits, features")),
          "514 features per row but expects 512"),
    wrong(3, "imagenet-head-kept", _model("self.backbone = resnet18(weights=None)\n"
                                          "        self.head = nn.Linear(1000 + extra_dim, num_classes)",
                                          _FWD.format("logits, features")),
          "1000 columns", "nn.Identity()"),
    wrong(3, "features-after-cat", _model(_INIT, """features = torch.cat([self.backbone(x), extra], dim=1)
        return self.head(features), features"""), "concatenated onto them"),
    wrong(3, "cat-dim-0", _model(_INIT, _FWD.format("logits, features").replace("dim=1", "dim=0")),
          "dim=0", "torch.cat([features, extra], dim=1)"),
    wrong(3, "ten-classes", _model(_INIT.replace("num_classes)", "10)"), _FWD.format("logits, features")),
          "(3, 10)", "6 classes"),
    right(3, "list", _model(_INIT, _FWD.format("[logits, features]"))),
    right(3, "children-backbone", _model("""backbone = resnet18(weights=None)
        self.features = nn.Sequential(*list(backbone.children())[:-1], nn.Flatten())
        self.head = nn.Linear(backbone.fc.in_features + extra_dim, num_classes)""",
                                         """features = self.features(x)
        return self.head(torch.cat((features, extra), 1)), features""")),
    mutation(SOLUTIONS, 3, "cat-dim-0", "dim=1)", "dim=0)", "dim=1"),
    mutation(SOLUTIONS, 3, "logits-only", "return logits, features", "return logits",
             "(logits, features)"),

    # Exercise 4: a checkpoint with another class count -----------------------------------------
    wrong(4, "nothing-loaded", "loaded = resnet18(weights=None, num_classes=settings.num_classes)",
          "backbone weights differ", "not loaded"),
    wrong(4, "head-not-replaced", "loaded = resnet18(weights=None)\n"
          "loaded.load_state_dict(torch.load(resnet18_path, weights_only=True))",
          "outputs 1000 classes"),
    wrong(4, "report-kept", LOAD_B + "loaded = loaded.load_state_dict(\n"
          "    {k: v for k, v in saved.items() if not k.startswith('fc.')}, strict=False)",
          "the report that load_state_dict returns"),
    wrong(4, "other-model-returned", "model = resnet18(weights=None)\n"
          "model.load_state_dict(torch.load(resnet18_path, weights_only=True))\n"
          "loaded = resnet18(weights=None, num_classes=settings.num_classes)",
          "not loaded into this model"),
    wrong(4, "layers-only", LOAD_B + "loaded.load_state_dict(\n"
          "    {k: v for k, v in saved.items() if k.startswith('layer')}, strict=False)",
          "conv1.weight", "not loaded"),
    wrong(4, "ten-classes", "loaded = resnet18(weights=None)\n"
          "loaded.load_state_dict(torch.load(resnet18_path, weights_only=True))\n"
          "loaded.fc = nn.Linear(loaded.fc.in_features, 10)", "outputs 10 classes"),
    wrong(4, "prefixed-keys", LOAD_B + "loaded.load_state_dict(\n"
          "    {'module.' + k: v for k, v in saved.items() if not k.startswith('fc.')}, strict=False)",
          "not loaded"),
    wrong(4, "resnet34", "from torchvision.models import resnet34\n\n"
          "loaded = resnet34(weights=None, num_classes=settings.num_classes)\n"
          "saved = torch.load(resnet18_path, weights_only=True)\n"
          "loaded.load_state_dict({k: v for k, v in saved.items() if not k.startswith('fc.')}, "
          "strict=False)", "lacks", "resnet18"),
    right(4, "fix-a", "from helpers.modify import replace_head\n\nloaded = resnet18(weights=None)\n"
          "loaded.load_state_dict(torch.load(resnet18_path, map_location='cpu', weights_only=True))\n"
          "replace_head(loaded, settings.num_classes)"),
    right(4, "fix-b-then-training-forward", LOAD_B + "loaded.load_state_dict(\n"
          "    {k: v for k, v in saved.items() if not k.startswith('fc.')}, strict=False)\n"
          "loaded.train()\n_ = loaded(torch.randn(4, 3, 32, 32))"),
    right(4, "fix-a-dropout-head", "loaded = resnet18(weights=None)\n"
          "loaded.load_state_dict(torch.load(resnet18_path, weights_only=True))\n"
          "loaded.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(loaded.fc.in_features, "
          "settings.num_classes))"),
    mutation(SOLUTIONS, 4, "loaded-into-another", "report = loaded.load_state_dict(",
             "report = resnet18(weights=None, num_classes=settings.num_classes).load_state_dict(",
             "not loaded"),
]
