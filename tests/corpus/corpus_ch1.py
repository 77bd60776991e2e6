"""Chapter 1 answers as learners write them: wrong ones with what the message must name, right
ones written in different ways, and small mutations of the reference solutions."""

from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import torch
from harness import mutation, right, wrong
from torch import nn

from helpers.data import load_digits
from helpers.exercises.ch1 import SOLUTIONS
from helpers.models import Bottleneck, TinyResNet

CHAPTER = 1
NUM_CLASSES = 6  # not 10: a class count typed in shows

CHECKS = {
    1: "from helpers.exercises.ch1 import check_named_sequential\n\n"
       "check_named_sequential(named_net, num_classes=settings.num_classes, batch=X)",
    2: "from helpers.exercises.ch1 import check_registered_blocks\n\n"
       "check_registered_blocks(FixedNet(settings.num_classes), expected_blocks=3)",
    3: "from helpers.exercises.ch1 import check_activation_net\n\n"
       "check_activation_net(act_net, keys=['relu', 'gelu', 'tanh'],\n"
       "                     num_classes=settings.num_classes, batch=Xg)",
    4: "from helpers.exercises.ch1 import check_tiny_resnet\n\n"
       "check_tiny_resnet(budget_net, num_classes=settings.num_classes, depth=4,\n"
       "                  max_parameters=12_000, batch=Xg)",
}


def namespace() -> dict:
    """What chapter 1 has defined when its exercises start."""
    return {"torch": torch, "nn": nn, "OrderedDict": OrderedDict, "Bottleneck": Bottleneck,
            "TinyResNet": TinyResNet,
            "settings": SimpleNamespace(num_classes=NUM_CLASSES, device="cpu"),
            "X": load_digits(NUM_CLASSES, channels=3).train.X[:8],
            "Xg": load_digits(NUM_CLASSES).train.X[:8]}


def _seq(*layers: str, names=("conv", "relu", "pool", "flatten", "fc")) -> str:
    pairs = ",\n    ".join(f'("{n}", {layer})' for n, layer in zip(names, layers, strict=True))
    return f"named_net = nn.Sequential(OrderedDict([\n    {pairs},\n])).to(settings.device)"


_OK = ("nn.Conv2d(3, 16, 3)", "nn.ReLU()", "nn.AdaptiveAvgPool2d(1)", "nn.Flatten()",
       "nn.Linear(16, settings.num_classes)")


def _fixed(init_blocks: str, forward: str = "for block in self.blocks:\n            x = block(x)",
           extra: str = "") -> str:
    return f"""
class FixedNet(nn.Module):
    def __init__(self, num_classes, *, width=16, depth=3):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        {init_blocks}
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(width, num_classes)){extra}

    def forward(self, x):
        x = self.stem(x)
        {forward}
        return self.head(x)
"""


def _act(acts: str = '{"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()}',
         forward: str = "", wrap: str = "nn.ModuleDict") -> str:
    forward = forward or """if activation not in self.acts:
            raise ValueError(f"unknown activation {activation!r}; choose one of {list(self.acts)}")
        return self.fc(self.acts[activation](self.hidden(x.flatten(1))))"""
    return f"""
class ActivationNet(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.acts = {wrap}({acts})
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x, activation="relu"):
        {forward}


act_net = ActivationNet(settings.num_classes).to(settings.device)
"""


ANSWERS = [
    # Exercise 1: a named Sequential ------------------------------------------------------------
    wrong(1, "numbered-layers", """
        named_net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(16, settings.num_classes))
        """, "numbers, not names", "OrderedDict"),
    wrong(1, "pool-2-linear-256", _seq("nn.Conv2d(3, 64, 3)", "nn.ReLU()", "nn.AdaptiveAvgPool2d(2)",
                                       "nn.Flatten()", "nn.Linear(256, settings.num_classes)"),
          "AdaptiveAvgPool2d(2)", "64x2x2 = 256 features", "AdaptiveAvgPool2d(1)"),
    wrong(1, "fc-in-features-typed-wrong", _seq("nn.Conv2d(3, 64, 3)", *_OK[1:4],
                                                "nn.Linear(16, settings.num_classes)"),
          "net.fc takes 16 features", "64 channels", "nn.Linear(64"),
    wrong(1, "ten-classes-typed-in", _seq(*_OK[:4], "nn.Linear(16, 10)"),
          "outputs 10 classes", "asks for 6", "settings.num_classes"),
    wrong(1, "one-input-channel", _seq("nn.Conv2d(1, 16, 3)", *_OK[1:]),
          "expects 1 input channels", "have 3"),
    wrong(1, "activation-named-act", _seq(*_OK, names=("conv", "act", "pool", "flatten", "fc")),
          "named ['conv', 'act'", "'relu'"),
    wrong(1, "max-pool", _seq(_OK[0], _OK[1], "nn.AdaptiveMaxPool2d(1)", *_OK[3:]),
          "net.pool is a AdaptiveMaxPool2d", "nn.AdaptiveAvgPool2d"),
    wrong(1, "flatten-before-pool", _seq(_OK[0], _OK[1], _OK[3], _OK[2], _OK[4],
                                         names=("conv", "relu", "flatten", "pool", "fc")),
          "in this order"),
    wrong(1, "gelu-named-relu", _seq(_OK[0], "nn.GELU()", *_OK[2:]),
          "net.relu is a GELU", "nn.ReLU"),
    right(1, "solution-style-64-channels", _seq("nn.Conv2d(3, 64, 3)", *_OK[1:4],
                                                "nn.Linear(64, settings.num_classes)")),
    right(1, "add-module", """
        named_net = nn.Sequential()
        named_net.add_module("conv", nn.Conv2d(3, 32, 5, padding=2))
        named_net.add_module("relu", nn.ReLU(inplace=True))
        named_net.add_module("pool", nn.AdaptiveAvgPool2d((1, 1)))
        named_net.add_module("flatten", nn.Flatten())
        named_net.add_module("fc", nn.Linear(32, settings.num_classes))
        """),
    mutation(SOLUTIONS, 1, "pool-2", "AdaptiveAvgPool2d(1)", "AdaptiveAvgPool2d(2)",
             "16x2x2 = 64 features"),
    mutation(SOLUTIONS, 1, "fc-64", "nn.Linear(16, settings.num_classes)",
             "nn.Linear(64, settings.num_classes)", "net.fc takes 64 features"),

    # Exercise 2: register the blocks -----------------------------------------------------------
    wrong(2, "plain-list", _fixed("self.blocks = [Bottleneck(width, width) for _ in range(depth)]"),
          "plain Python list", "nn.ModuleList"),
    wrong(2, "one-block-repeated", _fixed("self.blocks = nn.ModuleList([Bottleneck(width, width)] * depth)"),
          "same Bottleneck object", "582 parameters instead of 1,222", "for _ in range(depth)"),
    wrong(2, "sequential-repeated", _fixed("self.blocks = nn.Sequential(*[Bottleneck(width, width)] * depth)",
                                           "x = self.blocks(x)"),
          "same Bottleneck object", "instead of 1,222"),
    wrong(2, "only-first-block", _fixed(
        "self.blocks = nn.ModuleList([Bottleneck(width, width) for _ in range(depth)])",
        "x = self.blocks[0](x)"), "never runs block 1, 2", "for block in self.blocks"),
    wrong(2, "output-discarded", _fixed(
        "self.blocks = nn.ModuleList([Bottleneck(width, width) for _ in range(depth)])",
        "for block in self.blocks:\n            block(x)"), "x = block(x)"),
    wrong(2, "three-typed-in", _fixed(
        "self.blocks = nn.ModuleList([Bottleneck(width, width) for _ in range(3)])"),
        "has 3 blocks", "range(depth)"),
    wrong(2, "width-typed-in", _fixed(
        "self.blocks = nn.ModuleList([Bottleneck(16, 16) for _ in range(depth)])"),
        "another width", "Bottleneck(width, width)"),
    wrong(2, "plain-tuple", _fixed("self.blocks = tuple(Bottleneck(width, width) for _ in range(depth))"),
          "plain tuple", "nn.ModuleList"),
    wrong(2, "module-dict-iterated", _fixed(
        "self.blocks = nn.ModuleDict({str(i): Bottleneck(width, width) for i in range(depth)})"),
        "ModuleDict", "nn.ModuleList"),
    right(2, "sequential", _fixed(
        "self.blocks = nn.Sequential(*[Bottleneck(width, width) for _ in range(depth)])",
        "x = self.blocks(x)")),
    right(2, "append-loop", _fixed(
        "self.blocks = nn.ModuleList()\n        for _ in range(depth):\n"
        "            self.blocks.append(Bottleneck(width, width))")),
    right(2, "add-module", _fixed(
        "self.blocks = []\n        for i in range(depth):\n"
        "            block = Bottleneck(width, width)\n"
        "            self.add_module(f'block{i}', block)\n            self.blocks.append(block)"),
        "add_module", "nn.ModuleList([...]) is the idiomatic form"),
    mutation(SOLUTIONS, 2, "list",
             "nn.ModuleList(\n            [Bottleneck(width, width) for _ in range(depth)])",
             "[Bottleneck(width, width) for _ in range(depth)]", "plain Python list"),

    # Exercise 3: an activation chosen by name --------------------------------------------------
    wrong(3, "plain-dict", _act(wrap=""), "plain Python dict", "nn.ModuleDict"),
    wrong(3, "name-ignored", _act(forward='return self.fc(self.acts["relu"](self.hidden(x.flatten(1))))'),
          "ignores the name"),
    wrong(3, "silent-fallback", _act(forward="act = self.acts[activation] if activation in self.acts "
                                             "else self.acts['relu']\n"
                                             "        return self.fc(act(self.hidden(x.flatten(1))))"),
          "ran without an error", "ValueError"),
    wrong(3, "bare-key-error",
          _act(forward="return self.fc(self.acts[activation](self.hidden(x.flatten(1))))"),
          "does not list the valid names", "ValueError"),
    wrong(3, "capitalised-keys", _act(acts='{"ReLU": nn.ReLU(), "GELU": nn.GELU(), "Tanh": nn.Tanh()}'),
          "keys are", "['relu', 'gelu', 'tanh']"),
    wrong(3, "tanh-is-relu", _act(acts='{"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.ReLU()}'),
          "'tanh' entry computes something else", "nn.Tanh()"),
    wrong(3, "no-flatten", _act(forward="""if activation not in self.acts:
            raise ValueError(f"choose one of {list(self.acts)}")
        return self.fc(self.acts[activation](self.hidden(x)))"""), "8 features per row", "64"),
    wrong(3, "activation-before-hidden", _act(forward="""if activation not in self.acts:
            raise ValueError(f"choose one of {list(self.acts)}")
        return self.fc(self.hidden(self.acts[activation](x.flatten(1))))"""),
          "between the hidden layer and the head"),
    wrong(3, "type-error", _act(forward="""if activation not in self.acts:
            raise TypeError("bad activation")
        return self.fc(self.acts[activation](self.hidden(x.flatten(1))))"""), "raises TypeError"),
    right(3, "try-except", _act(forward="""try:
            act = self.acts[activation]
        except KeyError:
            raise ValueError(f"{activation!r} is not one of {sorted(self.acts.keys())}") from None
        return self.fc(act(self.hidden(x.flatten(1))))""")),
    wrong(3, "key-error-with-names", _act(forward="""if activation not in self.acts:
            raise KeyError(f"use relu, gelu or tanh, not {activation}")
        return self.fc(self.acts[activation](self.hidden(x.flatten(1))))"""),
          "raises KeyError", "raise a ValueError"),
    right(3, "value-error-joined-names", _act(forward="""if activation not in self.acts:
            raise ValueError("use " + ", ".join(self.acts) + f", not {activation}")
        h = torch.flatten(x, start_dim=1)
        return self.fc(self.acts[activation](self.hidden(h)))""")),
    mutation(SOLUTIONS, 3, "no-check", 'if activation not in self.activations:', "if False:",
             "does not list the valid names"),

    # Exercise 4: a deeper TinyResNet on a budget -----------------------------------------------
    wrong(4, "default-width", "budget_net = TinyResNet(settings.num_classes, depth=4)",
          "width 64", "over the budget", "width=48"),
    wrong(4, "just-over", "budget_net = TinyResNet(settings.num_classes, width=52, depth=4)",
          "over the budget of 12,000", "width=48"),
    wrong(4, "depth-3", "budget_net = TinyResNet(settings.num_classes, width=48, depth=3)",
          "3 blocks", "depth=4"),
    wrong(4, "depth-5", "budget_net = TinyResNet(settings.num_classes, width=40, depth=5)",
          "5 blocks", "depth=4"),
    wrong(4, "ten-classes", "budget_net = TinyResNet(10, width=48, depth=4)",
          "outputs 10 classes", "settings.num_classes"),
    wrong(4, "rgb-stem", "budget_net = TinyResNet(settings.num_classes, in_channels=3, width=48, depth=4)",
          "3-channel images", "have 1"),
    wrong(4, "own-sequential", """
        budget_net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(),
                                   nn.Linear(128, settings.num_classes))
        """, "expected a helpers.models.TinyResNet"),
    right(4, "width-32", "budget_net = TinyResNet(settings.num_classes, width=32, depth=4)"),
    right(4, "default-depth", "budget_net = TinyResNet(num_classes=settings.num_classes, width=48)"),
    mutation(SOLUTIONS, 4, "width-64", "width=48", "width=64", "over the budget"),
]
