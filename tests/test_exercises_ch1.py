"""Chapter 1 exercise checkers: each accepts a right answer and explains wrong ones.

The strict checkers (``check_x.__wrapped__``: raise ``ExerciseError``, return True) are tested
directly; the notebook checkers (print one ``[TODO]``/``[TRY AGAIN]``/``[OK]`` line, never raise)
are tested on the scaffolds of the notebook, on common wrong answers and on ``solution(n)``.
"""

from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import torch
from torch import nn

from helpers.exercises import ExerciseError, ch1
from helpers.exercises.ch1 import SOLUTIONS, solution
from helpers.models import Bottleneck, TinyResNet, count_parameters

check_named_sequential = ch1.check_named_sequential.__wrapped__
check_registered_blocks = ch1.check_registered_blocks.__wrapped__
check_activation_net = ch1.check_activation_net.__wrapped__
check_tiny_resnet = ch1.check_tiny_resnet.__wrapped__

X3 = torch.randn(8, 3, 8, 8)  # what load_digits(..., channels=3) gives
X1 = torch.randn(8, 1, 8, 8)


def named_sequential(num_classes, *, names=("conv", "relu", "pool", "flatten", "fc"), channels=64):
    layers = [nn.Conv2d(3, channels, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
              nn.Linear(channels, num_classes)]
    return nn.Sequential(OrderedDict(zip(names, layers, strict=True)))


# --- exercise 1: named Sequential -----------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [2, 5, 10])
def test_named_sequential_accepts_the_right_answer(num_classes, capsys):
    assert check_named_sequential(named_sequential(num_classes), num_classes=num_classes, batch=X3)
    assert capsys.readouterr().out == (
        f"[OK] conv -> relu -> pool -> flatten -> fc, output (8, {num_classes}) for 8 images, 1 and 3 "
        f"alike\n")


def test_named_sequential_explains_a_wrong_class_count():
    with pytest.raises(ExerciseError, match="outputs 10 classes; the widget asks for 5"):
        check_named_sequential(named_sequential(10), num_classes=5, batch=X3)


def test_named_sequential_explains_numbered_layers():
    net = nn.Sequential(*named_sequential(5))
    with pytest.raises(ExerciseError, match=r"numbers, not names.*OrderedDict"):
        check_named_sequential(net, num_classes=5, batch=X3)


def test_named_sequential_explains_wrong_names_and_types():
    net = named_sequential(5, names=("conv", "act", "pool", "flatten", "fc"))
    with pytest.raises(ExerciseError, match=r"named \['conv', 'act'.*asks for \['conv', 'relu'"):
        check_named_sequential(net, num_classes=5, batch=X3)
    net = named_sequential(5)
    net.relu = nn.GELU()
    with pytest.raises(ExerciseError, match="net.relu is a GELU; it should be an nn.ReLU"):
        check_named_sequential(net, num_classes=5, batch=X3)


def test_named_sequential_explains_mismatched_sizes():
    net = named_sequential(5)
    net.fc = nn.Linear(32, 5)
    with pytest.raises(ExerciseError, match="net.fc takes 32 features, but net.conv makes 64"):
        check_named_sequential(net, num_classes=5, batch=X3)
    with pytest.raises(ExerciseError, match="expects 3 input channels, but the images have 1"):
        check_named_sequential(named_sequential(5), num_classes=5, batch=X1)


def test_named_sequential_rejects_other_containers():
    with pytest.raises(ExerciseError, match="expected an nn.Sequential, got ModuleList"):
        check_named_sequential(nn.ModuleList(), num_classes=5, batch=X3)


# --- exercise 2: blocks registered ----------------------------------------------------------------

class BlockNet(nn.Module):
    def __init__(self, container, depth=3, width=16, num_classes=5):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.blocks = container([Bottleneck(width, width) for _ in range(depth)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(width, num_classes))

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@pytest.mark.parametrize("container", [nn.ModuleList, lambda blocks: nn.Sequential(*blocks)])
def test_registered_blocks_accepts_module_list_and_sequential(container, capsys):
    net = BlockNet(container)
    assert check_registered_blocks(net, expected_blocks=3)
    assert capsys.readouterr().out == (
        f"[OK] 3 blocks, {count_parameters(net):,} trainable parameters, all registered, each runs "
        f"once per forward\n")


def test_registered_blocks_explains_a_plain_list():
    net = BlockNet(list)
    visible = count_parameters(net)
    full = visible + 3 * count_parameters(Bottleneck(16, 16))
    with pytest.raises(ExerciseError, match=(
            rf"your blocks are in a plain Python list: parameters\(\) does not see them, so it "
            rf"reports {visible:,} parameters instead of {full:,}.*nn.ModuleList")):
        check_registered_blocks(net)


def test_registered_blocks_explains_a_plain_dict_and_a_wrong_count():
    net = BlockNet(lambda blocks: dict(enumerate(blocks)))
    with pytest.raises(ExerciseError, match="a plain dict.*nn.ModuleDict"):
        check_registered_blocks(net)
    with pytest.raises(ExerciseError, match="holds 3 blocks; the exercise asks for 4"):
        check_registered_blocks(BlockNet(nn.ModuleList), expected_blocks=4)


def test_registered_blocks_finds_modules_hidden_elsewhere():
    net = BlockNet(nn.ModuleList)
    net.head[2].extras = [nn.Linear(5, 5)]  # a plain list deeper in the tree
    with pytest.raises(ExerciseError, match=r"head\.2\.extras\[0\].*30 parameters"):
        check_registered_blocks(net)


def test_registered_blocks_needs_a_blocks_attribute():
    with pytest.raises(ExerciseError, match="no attribute `blocks`"):
        check_registered_blocks(nn.Linear(2, 2))


# --- exercise 3: activation by name ---------------------------------------------------------------

KEYS = ["relu", "gelu", "tanh"]


class ActNet(nn.Module):
    def __init__(self, num_classes=5, *, acts=None, refuse=True, ignore_name=False):
        super().__init__()
        self.hidden = nn.Linear(64, 32)
        self.acts = acts if acts is not None else nn.ModuleDict(
            {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()})
        self.fc = nn.Linear(32, num_classes)
        self.refuse, self.ignore_name = refuse, ignore_name

    def forward(self, x, activation="relu"):
        if self.refuse and activation not in self.acts:
            raise ValueError(f"unknown activation {activation!r}; choose one of {list(self.acts)}")
        if self.ignore_name or activation not in self.acts:
            activation = "relu"
        return self.fc(self.acts[activation](self.hidden(x.flatten(1))))


def test_activation_net_accepts_the_right_answer(capsys):
    assert check_activation_net(ActNet(), keys=KEYS, num_classes=5, batch=X1)
    assert "[OK] activations ['relu', 'gelu', 'tanh'] all work" in capsys.readouterr().out


def test_activation_net_explains_wrong_keys_and_plain_dicts():
    net = ActNet(acts=nn.ModuleDict({"relu": nn.ReLU(), "gelu": nn.GELU()}))
    with pytest.raises(ExerciseError, match=r"keys are \{'acts': \['relu', 'gelu'\]\}"):
        check_activation_net(net, keys=KEYS, num_classes=5, batch=X1)
    net = ActNet(acts={"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()})
    with pytest.raises(ExerciseError, match=r"plain Python dict or list: acts\['relu'\]"):
        check_activation_net(net, keys=KEYS, num_classes=5, batch=X1)


def test_activation_net_explains_an_ignored_name():
    with pytest.raises(ExerciseError, match="give identical outputs: forward ignores the name"):
        check_activation_net(ActNet(ignore_name=True), keys=KEYS, num_classes=5, batch=X1)


def test_activation_net_explains_silent_or_unhelpful_unknown_names():
    with pytest.raises(ExerciseError, match="ran without an error"):
        check_activation_net(ActNet(refuse=False), keys=KEYS, num_classes=5, batch=X1)

    class BareKeyError(ActNet):  # nn.ModuleDict's own KeyError names only the missing key
        def forward(self, x, activation="relu"):
            return self.fc(self.acts[activation](self.hidden(x.flatten(1))))

    with pytest.raises(ExerciseError, match="does not list the valid names"):
        check_activation_net(BareKeyError(), keys=KEYS, num_classes=5, batch=X1)


def test_activation_net_explains_a_wrong_class_count():
    with pytest.raises(ExerciseError, match="outputs 5 classes; the widget asks for 3"):
        check_activation_net(ActNet(5), keys=KEYS, num_classes=3, batch=X1)


# --- exercise 4: TinyResNet on a budget -----------------------------------------------------------

def test_tiny_resnet_accepts_a_net_within_budget(capsys):
    net = TinyResNet(10, width=48, depth=4)
    assert check_tiny_resnet(net, num_classes=10, depth=4, max_parameters=12_000, batch=X1)
    assert capsys.readouterr().out == (
        f"[OK] 4 blocks of width 48, {count_parameters(net):,} parameters (budget 12,000), output "
        f"(8, 10)\n")


def test_tiny_resnet_explains_budget_depth_and_crashes():
    with pytest.raises(ExerciseError, match="over the budget of 12,000.*smaller width"):
        check_tiny_resnet(TinyResNet(10, width=64, depth=4), num_classes=10, depth=4,
                          max_parameters=12_000, batch=X1)
    with pytest.raises(ExerciseError, match="has 2 blocks; the exercise asks for depth=4"):
        check_tiny_resnet(TinyResNet(10, width=48, depth=2), num_classes=10, depth=4,
                          max_parameters=12_000, batch=X1)
    with pytest.raises(ExerciseError, match=r"your net expects 1-channel images, the "
                                            r"digits have 3"):
        check_tiny_resnet(TinyResNet(10, width=48, depth=4), num_classes=10, depth=4,
                          max_parameters=12_000, batch=X3)
    with pytest.raises(ExerciseError, match="expected a helpers.models.TinyResNet"):
        check_tiny_resnet(nn.Linear(2, 2), num_classes=10, depth=4, max_parameters=12_000,
                          batch=X1)


# --- the notebook checkers: scaffold -> [TODO], wrong -> [TRY AGAIN], solution(n) -> [OK] ----------

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_model_definition.ipynb"
SETTINGS = SimpleNamespace(num_classes=10, device="cpu")


def _namespace():
    """What the notebook has defined when the exercises start."""
    return {"nn": nn, "torch": torch, "OrderedDict": OrderedDict, "settings": SETTINGS,
            "Bottleneck": Bottleneck, "TinyResNet": TinyResNet}


def _scaffolds():
    """The exercise cells of the committed notebook, run as a learner first runs them."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cells = [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])]
    namespace = _namespace()
    for source in cells:
        exec(compile(source, "exercise", "exec"), namespace)
    return len(cells), namespace


def _calls(ns):
    """Exercise n -> (notebook checker, strict checker) called as the notebook calls them."""
    return {
        1: lambda check: check(ns["named_net"], num_classes=10, batch=X3),
        2: lambda check: check(ns["FixedNet"](10), expected_blocks=3),
        3: lambda check: check(ns["act_net"], keys=KEYS, num_classes=10, batch=X1),
        4: lambda check: check(ns["budget_net"], num_classes=10, depth=4,
                               max_parameters=12_000, batch=X1),
    }


CHECKERS = {1: ch1.check_named_sequential, 2: ch1.check_registered_blocks,
            3: ch1.check_activation_net, 4: ch1.check_tiny_resnet}


def test_every_scaffold_gets_one_todo_line(capsys):
    count, namespace = _scaffolds()
    assert count == len(SOLUTIONS) == len(CHECKERS)
    for n, call in _calls(namespace).items():
        assert call(CHECKERS[n]) is None
        out = capsys.readouterr().out
        assert out == f"[TODO] {CHECKERS[n].todo}\n", (n, out)


@pytest.mark.parametrize("n", sorted(SOLUTIONS))
def test_solution_passes_the_strict_checker(n, capsys):
    namespace = _namespace()
    exec(compile(str(solution(n)), f"solution {n}", "exec"), namespace)
    assert _calls(namespace)[n](CHECKERS[n].__wrapped__) is True
    assert _calls(namespace)[n](CHECKERS[n]) is None
    assert capsys.readouterr().out.splitlines()[-1].startswith("[OK] ")


def test_solutions_stand_alone():
    """A solution names its own imports, so it works wherever it is pasted."""
    for n in SOLUTIONS:
        namespace = {"settings": SETTINGS}
        exec(compile(str(solution(n)), f"solution {n}", "exec"), namespace)


def _try_again(capsys, call):
    assert call() is None
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("[TRY AGAIN] "), lines
    return lines[0]


def test_common_wrong_answers_keep_their_messages(capsys):
    line = _try_again(capsys, lambda: ch1.check_named_sequential(
        nn.Sequential(*named_sequential(10)), num_classes=10, batch=X3))
    assert "numbers, not names" in line and "OrderedDict" in line
    line = _try_again(capsys, lambda: ch1.check_named_sequential(
        named_sequential(10), num_classes=5, batch=X3))
    assert "outputs 10 classes; the widget asks for 5" in line
    line = _try_again(capsys, lambda: ch1.check_registered_blocks(BlockNet(list),
                                                                   expected_blocks=3))
    assert "your blocks are in a plain Python list: parameters() does not see them" in line
    line = _try_again(capsys, lambda: ch1.check_activation_net(
        ActNet(ignore_name=True), keys=KEYS, num_classes=5, batch=X1))
    assert "give identical outputs: forward ignores the name" in line
    line = _try_again(capsys, lambda: ch1.check_tiny_resnet(
        TinyResNet(10, width=64, depth=4), num_classes=10, depth=4, max_parameters=12_000,
        batch=X1))
    assert "over the budget of 12,000" in line


def test_a_crashing_answer_is_explained_not_raised(capsys):
    class Crashes(ActNet):
        def forward(self, x, activation="relu"):
            raise RuntimeError("boom")

    line = _try_again(capsys, lambda: ch1.check_activation_net(
        Crashes(), keys=KEYS, num_classes=5, batch=X1))
    assert "failed with RuntimeError: boom" in line
