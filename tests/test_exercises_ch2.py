"""Chapter 2's exercise checkers: strict checks, the one-line notebook checkers, the solutions."""

from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import torch
from torch import nn
from torchvision.models import resnet18
from torchvision.models.resnet import BasicBlock, ResNet

from helpers.exercises import ExerciseError, Unanswered
from helpers.exercises.ch2 import (
    SOLUTIONS,
    check_frozen_except,
    check_loaded_checkpoint,
    check_logits_and_features,
    check_new_head,
    solution,
)
from helpers.modify import ResNetWithExtraInput, freeze, replace_head, unfreeze

# The strict checkers raise ExerciseError / return True; the notebook checkers print one line.
strict_new_head = check_new_head.__wrapped__
strict_frozen_except = check_frozen_except.__wrapped__
strict_logits_and_features = check_logits_and_features.__wrapped__
strict_loaded_checkpoint = check_loaded_checkpoint.__wrapped__


def small_resnet(num_classes: int = 1000) -> ResNet:
    """Same layout and names as resnet18 (layer1..layer4, fc, 512 features), one block a stage."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes)


# Exercise 1: a new head ------------------------------------------------------------------------

def test_new_head_right_answer(capsys):
    net = small_resnet()
    net.fc = nn.Linear(net.fc.in_features, 5)
    assert strict_new_head(net, num_classes=5)
    assert capsys.readouterr().out == "[OK] head Linear(512 -> 5), output (2, 5)\n"
    assert net.training  # the checker restores the mode it found


def test_new_head_untouched_model_says_1000_classes():
    with pytest.raises(ExerciseError,
                       match="your head outputs 1000 classes; the widget asks for 5"):
        strict_new_head(small_resnet(), num_classes=5)


def test_new_head_with_resnet50_in_features_is_explained():
    net = small_resnet()
    net.fc = nn.Linear(2048, 5)  # copied from the resnet50 example, but this backbone gives 512
    with pytest.raises(ExerciseError, match="expects 2048 input features, but the backbone "
                                            "delivers 512"):
        strict_new_head(net, num_classes=5)


def test_new_head_identity_is_not_a_head():
    net = small_resnet()
    net.fc = nn.Identity()
    with pytest.raises(ExerciseError, match="model.fc is an Identity; it should be a new"):
        strict_new_head(net, num_classes=5)


# Exercise 2: freeze all but layer4 and fc -----------------------------------------------------

def test_frozen_except_right_answer(capsys):
    net = small_resnet(num_classes=5)
    freeze(net)
    unfreeze(net.layer4)
    unfreeze(net.fc)
    assert strict_frozen_except(net)
    expected = sum(p.numel() for p in net.layer4.parameters()) + 512 * 5 + 5
    total = sum(p.numel() for p in net.parameters())
    out = capsys.readouterr().out
    assert out == f"[OK] {expected:,} of {total:,} parameters trainable: layer4, fc\n"


def test_frozen_except_names_what_is_still_trainable():
    net = small_resnet(num_classes=5)
    freeze(net.layer1)  # forgot the stem and the other stages
    with pytest.raises(ExerciseError, match=r"still trainable but should be frozen: conv1, "
                                            r"bn1, layer2, layer3 \("):
        strict_frozen_except(net)


def test_frozen_except_names_what_is_wrongly_frozen():
    net = freeze(small_resnet(num_classes=5))
    unfreeze(net.fc)  # forgot layer4
    with pytest.raises(ExerciseError, match=r"frozen but should train: layer4 \(") as err:
        strict_frozen_except(net)
    assert "still trainable" not in str(err.value)
    assert f"{512 * 5 + 5:,} parameters are trainable" in str(err.value)


def test_frozen_except_rejects_a_model_without_layer4():
    with pytest.raises(ExerciseError, match="no parameters under 'layer4'"):
        strict_frozen_except(nn.Sequential(nn.Linear(2, 2)))


# Exercise 3: (logits, features) with an extra input -------------------------------------------

class LogitsAndFeatures(ResNetWithExtraInput):
    def forward(self, x, extra):
        features = self.features(x)
        return self.head(torch.cat([features, extra], dim=1)), features


def test_logits_and_features_right_answer(capsys):
    model = LogitsAndFeatures(5, extra_dim=2, backbone=small_resnet())
    assert strict_logits_and_features(model, num_classes=5, extra_dim=2, feature_dim=512)
    assert capsys.readouterr().out == ("[OK] logits (3, 5), features (3, 512); the extra input "
                                       "changes the logits\n")


def test_logits_only_is_reported():
    model = ResNetWithExtraInput(5, extra_dim=2, backbone=small_resnet())
    with pytest.raises(ExerciseError, match=r"forward returned a tensor of shape \(3, 5\); it "
                                            r"should return a tuple \(logits, features\)"):
        strict_logits_and_features(model, num_classes=5, extra_dim=2)


def test_extra_input_ignored_is_reported():
    class IgnoresExtra(LogitsAndFeatures):
        def __init__(self):
            super().__init__(5, extra_dim=2, backbone=small_resnet())
            self.head = nn.Linear(512, 5)

        def forward(self, x, extra):
            features = self.features(x)
            return self.head(features), features

    with pytest.raises(ExerciseError, match="does not change the logits: the head never sees it"):
        strict_logits_and_features(IgnoresExtra(), num_classes=5, extra_dim=2)


def test_wrong_class_count_and_concatenated_features_are_reported():
    model = LogitsAndFeatures(1000, extra_dim=2, backbone=small_resnet())
    with pytest.raises(ExerciseError, match=r"logits have shape \(3, 1000\); expected \(3, 5\)"):
        strict_logits_and_features(model, num_classes=5, extra_dim=2)

    class ReturnsConcat(LogitsAndFeatures):
        def forward(self, x, extra):
            joined = torch.cat([self.features(x), extra], dim=1)
            return self.head(joined), joined

    model = ReturnsConcat(5, extra_dim=2, backbone=small_resnet())
    with pytest.raises(ExerciseError, match="features have 514 columns; the backbone gives 512. "
                                            "It looks like the extra input"):
        strict_logits_and_features(model, num_classes=5, extra_dim=2, feature_dim=512)


def test_forward_without_extra_argument_is_reported():
    with pytest.raises(ExerciseError, match="calling model\\(x, extra\\) on inputs of shape "
                                            "\\(3, 3, 32, 32\\), \\(3, 2\\) failed with TypeError"):
        strict_logits_and_features(small_resnet(5), num_classes=5, extra_dim=2)


# Exercise 4: load a checkpoint with another class count ---------------------------------------

@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(1)
    path = tmp_path / "resnet_1000.pt"
    torch.save(small_resnet(1000).state_dict(), path)
    return path


def test_loaded_checkpoint_right_answer(checkpoint, capsys):
    torch.manual_seed(2)
    model = small_resnet(5)
    state = torch.load(checkpoint, weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")},
                          strict=False)
    assert strict_loaded_checkpoint(model, checkpoint, num_classes=5)
    weights = sum(1 for k, _ in model.named_parameters() if not k.startswith("fc."))
    assert capsys.readouterr().out == (f"[OK] {weights} backbone weights equal the checkpoint; "
                                       f"head Linear(512 -> 5)\n")


def test_loaded_checkpoint_nothing_loaded(checkpoint):
    torch.manual_seed(2)
    with pytest.raises(ExerciseError, match=r"backbone weights differ from the checkpoint "
                                            r"\(e.g. conv1.weight\): the weights were not loaded"):
        strict_loaded_checkpoint(small_resnet(5), checkpoint, num_classes=5)


def test_loaded_checkpoint_head_not_replaced(checkpoint):
    model = small_resnet(1000)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    with pytest.raises(ExerciseError, match="your head outputs 1000 classes; the widget asks "
                                            "for 5"):
        strict_loaded_checkpoint(model, checkpoint, num_classes=5)
    replace_head(model, 5)
    assert strict_loaded_checkpoint(model, checkpoint, num_classes=5)


def test_loaded_checkpoint_other_architecture(checkpoint):
    with pytest.raises(ExerciseError, match="the model has no 'conv1.weight'"):
        strict_loaded_checkpoint(nn.Sequential(nn.Linear(2, 2)), checkpoint, num_classes=5)


# The notebook checkers: one line, [TODO] for the scaffolds, [TRY AGAIN] for wrong answers ----

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_model_modification.ipynb"


def notebook_namespace(tmp_path, num_classes: int = 5) -> dict:
    """The names the chapter's exercise cells use, as the notebook defines them."""
    torch.manual_seed(2)
    path = tmp_path / "resnet18_1000_classes.pt"
    torch.save(resnet18(weights=None).state_dict(), path)
    return {"torch": torch, "nn": nn, "resnet18": resnet18, "resnet18_path": path,
            "settings": SimpleNamespace(num_classes=num_classes, device="cpu")}


def run_checkers(ns: dict) -> list:
    """Call the four notebook checkers as the notebook's checker cells do; collect what they return."""
    settings = ns["settings"]
    return [
        check_new_head(ns["exercise_net"], num_classes=settings.num_classes),
        check_frozen_except(ns["finetune_net"], trainable=("layer4", "fc")),
        check_logits_and_features(ns["exercise_model"], num_classes=settings.num_classes,
                                  extra_dim=ns["extra_dim"], feature_dim=512),
        check_loaded_checkpoint(ns["loaded"], ns["resnet18_path"],
                                num_classes=settings.num_classes),
    ]


def exercise_cells() -> list[str]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return [c.source for c in nb.cells if "exercise" in c.metadata.get("tags", [])]


def test_notebook_scaffolds_print_todo(tmp_path, capsys):
    cells = exercise_cells()
    assert len(cells) == len(SOLUTIONS) == 4
    ns = notebook_namespace(tmp_path)
    for source in cells:
        exec(compile(source, "scaffold", "exec"), ns)  # each scaffold runs as it is
    capsys.readouterr()
    assert run_checkers(ns) == [None] * 4
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("] ")[0] + "]" for line in lines] == ["[TODO]"] * 4, lines
    assert lines[0] == "[TODO] Replace None by a new nn.Linear head: exercise_net.fc = " \
                       "nn.Linear(...), in_features read from the old head, settings.num_classes " \
                       "outputs"


@pytest.mark.parametrize("answer", [None, ...])
def test_none_or_ellipsis_is_todo(answer, capsys):
    assert check_new_head(answer, num_classes=5) is None
    assert check_loaded_checkpoint(answer, "unused.pt", num_classes=5) is None
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith("[TODO] ") for line in out)


def test_solutions_pass_the_strict_checkers(tmp_path, capsys):
    ns = notebook_namespace(tmp_path)
    for n in sorted(SOLUTIONS):
        exec(compile(str(solution(n)), f"solution {n}", "exec"), ns)
    settings = ns["settings"]
    assert strict_new_head(ns["exercise_net"], num_classes=settings.num_classes)
    assert strict_frozen_except(ns["finetune_net"])
    assert strict_logits_and_features(ns["exercise_model"], num_classes=settings.num_classes,
                                      extra_dim=ns["extra_dim"], feature_dim=512)
    assert strict_loaded_checkpoint(ns["loaded"], ns["resnet18_path"],
                                    num_classes=settings.num_classes)
    capsys.readouterr()
    assert run_checkers(ns) == [None] * 4
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("[OK] ") for line in lines), lines


def test_common_wrong_answers_print_try_again(checkpoint, capsys):
    net = small_resnet()
    net.fc = nn.Linear(2048, 5)  # the resnet50 size typed in
    frozen_stem_only = small_resnet(5)
    freeze(frozen_stem_only.layer1)
    ignores_extra = ResNetWithExtraInput(5, extra_dim=2, backbone=small_resnet())
    torch.manual_seed(2)
    results = [
        check_new_head(small_resnet(), num_classes=5),
        check_new_head(net, num_classes=5),
        check_frozen_except(frozen_stem_only),
        check_logits_and_features(ignores_extra, num_classes=5, extra_dim=2),
        check_loaded_checkpoint(small_resnet(5), checkpoint, num_classes=5),
    ]
    assert results == [None] * 5
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[TRY AGAIN] your head outputs 1000 classes; the widget asks for 5. Build the new head "
        "with settings.num_classes outputs",
        "[TRY AGAIN] your head expects 2048 input features, but the backbone delivers 512. Read "
        "the size from the old head: nn.Linear(model.fc.in_features, settings.num_classes)",
        lines[2],
        "[TRY AGAIN] forward returned a tensor of shape (3, 5); it should return a tuple "
        "(logits, features)",
        lines[4],
    ]
    assert lines[2].startswith("[TRY AGAIN] ") and "still trainable but should be frozen: conv1, " \
                                                    "bn1, layer2, layer3 (" in lines[2]
    assert lines[4].startswith("[TRY AGAIN] ") and "the weights were not loaded" in lines[4]


def test_half_written_class_is_explained(capsys):
    class NoSuperInit(nn.Module):
        def __init__(self, num_classes, extra_dim):
            self.num_classes = num_classes

        def forward(self, x, extra):
            ...

    check_logits_and_features(NoSuperInit(5, 2), num_classes=5, extra_dim=2)
    assert capsys.readouterr().out == (
        "[TRY AGAIN] exercise_model should be an initialised nn.Module, got NoSuperInit; does "
        "__init__ call super().__init__() first?\n")


def test_nothing_frozen_is_todo_but_strict_says_so_too():
    with pytest.raises(Unanswered, match="Every parameter still trains"):
        strict_frozen_except(small_resnet(5))
