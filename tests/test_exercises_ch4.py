"""Chapter 4's exercise checkers: strict checks, the one-line notebook checkers, the solutions.

The strict checkers (``check_x.__wrapped__``) raise ``ExerciseError`` or return True; the notebook
checkers (``ch4.check_x``) print one ``[TODO]`` / ``[TRY AGAIN]`` / ``[OK]`` line and return None.
"""

import copy
import random
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from helpers.checkpoint import load_checkpoint
from helpers.exercises import ExerciseError, ch4
from helpers.exercises.ch4 import SOLUTIONS, solution
from helpers.models import TinyResNet
from helpers.training import History, fit

check_extended_model = ch4.check_extended_model.__wrapped__
check_predict_function = ch4.check_predict_function.__wrapped__
check_resume_training = ch4.check_resume_training.__wrapped__
check_torchrun_command = ch4.check_torchrun_command.__wrapped__


def _old(num_classes=3, seed=0):
    torch.manual_seed(seed)
    model = TinyResNet(num_classes, width=8, depth=1)
    with torch.no_grad():  # "trained": BatchNorm statistics away from their defaults
        for name, tensor in model.state_dict().items():
            if "running" in name:
                tensor.uniform_(0.5, 1.5)
    return model


def _x(n=8):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _extend(old, num_classes, *, copy_rows=True, load_backbone=True, width=8):
    torch.manual_seed(5)
    new = TinyResNet(num_classes, width=width, depth=1)
    if load_backbone:
        state = {k: v for k, v in old.state_dict().items() if not k.startswith("fc.")}
        new.load_state_dict(state, strict=False)
    if copy_rows:
        with torch.no_grad():
            new.fc.weight[:old.fc.out_features] = old.fc.weight
            new.fc.bias[:old.fc.out_features] = old.fc.bias
    return new


# Exercise 1: extend a trained model to more classes ---------------------------------------------

@pytest.mark.parametrize("old_classes, new_classes", [(3, 6), (2, 2)])
def test_extended_right_answer(capsys, old_classes, new_classes):
    old = _old(old_classes)
    assert check_extended_model(_extend(old, new_classes), old, num_classes=new_classes, example=_x())
    out = capsys.readouterr().out
    assert out.startswith(f"[OK] head {old_classes} -> {new_classes} outputs; ")
    assert f"scores of the {old_classes} known digits unchanged" in out


def test_extended_wrong_class_count():
    old = _old(3)
    with pytest.raises(ExerciseError, match="your head outputs 3 classes; the widget asks for 6"):
        check_extended_model(copy.deepcopy(old), old, num_classes=6, example=_x())


def test_extended_fresh_backbone_is_named():
    old = _old(3)
    with pytest.raises(ExerciseError, match=r"backbone weights differ from the trained model's "
                                            r"\(e.g. stem.0.weight\): the backbone was not loaded"):
        check_extended_model(_extend(old, 6, load_backbone=False), old, num_classes=6, example=_x())


def test_extended_fresh_head_rows_are_explained():
    old = _old(3)
    with pytest.raises(ExerciseError, match=r"the first 3 rows of your head differ from the trained "
                                            r"head.*extended.fc.weight\[:3\] = old_model.fc.weight"):
        check_extended_model(_extend(old, 6, copy_rows=False), old, num_classes=6, example=_x())


def test_extended_other_width_is_explained():
    old = _old(3)
    with pytest.raises(ExerciseError, match="your head takes 16 features, the trained backbone "
                                            "delivers 8"):
        check_extended_model(TinyResNet(6, width=16, depth=1), old, num_classes=6, example=_x())


def test_extended_other_architecture_is_explained():
    old = _old(3)
    other = nn.Module()
    other.fc = nn.Linear(8, 6)
    with pytest.raises(ExerciseError, match="your model has no 'stem.0.weight'"):
        check_extended_model(other, old, num_classes=6, example=_x())
    with pytest.raises(ExerciseError, match="extended.fc is missing"):
        check_extended_model(nn.Sequential(), old, num_classes=6, example=_x())


# Exercise 2: a predict function for deployment --------------------------------------------------

NAMES = ["zero", "one", "two", "three"]


def _model():
    model = _old(4)
    model.dropout.p = 0.5
    return model


def predict_digits(model, X, class_names):
    model.eval()
    with torch.inference_mode():
        return [class_names[i] for i in model(X).argmax(1).tolist()]


def test_predict_right_answers(capsys):
    model = _model().train()
    assert check_predict_function(predict_digits, model, _x(16), NAMES)
    out = capsys.readouterr().out
    assert out == "[OK] 16 names, all correct; eval mode, inference_mode; model left in eval mode\n"
    assert model.training  # the checker restores the mode it found

    def with_no_grad_restoring(model, X, class_names):
        was = model.training
        model.eval()
        with torch.no_grad():
            idx = model(X).argmax(1)
        model.train(was)
        return [class_names[int(i)] for i in idx]

    assert check_predict_function(with_no_grad_restoring, _model(), _x(16), NAMES)
    assert capsys.readouterr().out.endswith("eval mode, no_grad; model training mode restored\n")


def test_predict_without_eval_is_explained():
    def no_eval(model, X, class_names):
        with torch.inference_mode():
            return [class_names[i] for i in model(X).argmax(1).tolist()]

    with pytest.raises(ExerciseError, match="was in training mode while it predicted.*model.eval()"):
        check_predict_function(no_eval, _model(), _x(16), NAMES)


def test_predict_with_autograd_is_explained():
    def with_grad(model, X, class_names):
        model.eval()
        return [class_names[i] for i in model(X).argmax(1).tolist()]

    with pytest.raises(ExerciseError, match="autograd was recording.*torch.inference_mode()"):
        check_predict_function(with_grad, _model(), _x(16), NAMES)


def test_predict_indices_instead_of_names():
    def indices(model, X, class_names):
        model.eval()
        with torch.inference_mode():
            return model(X).argmax(1).tolist()

    with pytest.raises(ExerciseError, match="returned int values .*not names"):
        check_predict_function(indices, _model(), _x(16), NAMES)

    def tensor(model, X, class_names):
        model.eval()
        with torch.inference_mode():
            return model(X).argmax(1)

    with pytest.raises(ExerciseError, match=r"returned a tensor of shape \(16,\); return the class"):
        check_predict_function(tensor, _model(), _x(16), NAMES)


def test_predict_wrong_names_and_no_model_call():
    def softmax_over_the_batch(model, X, class_names):
        model.eval()
        with torch.inference_mode():
            probabilities = model(X).softmax(0) * torch.linspace(1, 100, len(X)).unsqueeze(1)
        return [class_names[i] for i in probabilities.argmax(1).tolist()]

    with pytest.raises(ExerciseError, match=r"of 16 names are wrong.*\(dim=1\)"):
        check_predict_function(softmax_over_the_batch, _model(), _x(16), NAMES)
    with pytest.raises(ExerciseError, match="never called the model"):
        check_predict_function(lambda m, X, names: [names[0]] * len(X), _model(), _x(16), NAMES)
    with pytest.raises(ExerciseError, match="failed with ZeroDivisionError"):
        check_predict_function(lambda m, X, names: 1 / 0, _model(), _x(16), NAMES)


# Exercise 3: resume a run to the requested epoch count -------------------------------------------

def resume_training(path, model, optimizer, scheduler, data, epochs):
    state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
    return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
               start_epoch=state["start_epoch"], history=History.from_dict(state["history"]),
               progress=False)


def test_resume_right_answer(capsys):
    assert check_resume_training(resume_training)
    assert capsys.readouterr().out == ("[OK] resumed after epoch 2, trained to epoch 4; weights "
                                       "and history equal the uninterrupted run's\n")


def test_resume_without_history():
    def no_history(path, model, optimizer, scheduler, data, epochs):
        state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
        return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                   start_epoch=state["start_epoch"], progress=False)

    with pytest.raises(ExerciseError, match=r"starts at epoch 3: .*History.from_dict"):
        check_resume_training(no_history)


def test_resume_repeating_the_saved_epoch():
    def repeats(path, model, optimizer, scheduler, data, epochs):
        state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
        return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                   start_epoch=state["epoch"], history=History.from_dict(state["history"]),
                   progress=False)

    with pytest.raises(ExerciseError, match=r"Tried to step 5 times.*ran out of steps.*"
                                            r"start_epoch=state\['start_epoch'\]"):
        check_resume_training(repeats)


def test_resume_without_scheduler():
    def no_scheduler(path, model, optimizer, scheduler, data, epochs):
        state = load_checkpoint(path, model=model, optimizer=optimizer)
        return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                   start_epoch=state["start_epoch"], history=History.from_dict(state["history"]),
                   progress=False)

    with pytest.raises(ExerciseError, match="scheduler counted 2 steps, expected 4"):
        check_resume_training(no_scheduler)


def test_resume_history_without_the_first_epochs_counts_from_1():
    def rebuilt_history(path, model, optimizer, scheduler, data, epochs):
        state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
        history = History.from_dict(state["history"])
        fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
            start_epoch=state["start_epoch"], history=history, progress=False)
        history.epoch[:] = [0, 2, 3, 4]  # as if one epoch were counted twice
        return history

    with pytest.raises(ExerciseError, match=r"lists the epochs \[1, 3, 4, 5\], expected "
                                            r"\[1, 2, 3, 4\].*holds epoch 2, finished"):
        check_resume_training(rebuilt_history)


def test_resume_without_random_state():
    def no_rng(path, model, optimizer, scheduler, data, epochs):
        state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler,
                                restore_rng=False)
        return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                   start_epoch=state["start_epoch"], history=History.from_dict(state["history"]),
                   progress=False)

    with pytest.raises(ExerciseError, match="final weights differ.*random state"):
        check_resume_training(no_rng)


def test_resume_returning_nothing_or_crashing():
    with pytest.raises(ExerciseError, match="returned None"):
        check_resume_training(lambda *args: None)
    with pytest.raises(ExerciseError, match="failed with KeyError"):
        check_resume_training(lambda *args: {}["model"])


def test_resume_checker_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(123)
    random.seed(4)
    np.random.seed(5)
    check_resume_training(resume_training)
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


# Exercise 4: a torchrun command line --------------------------------------------------------------

GOAL = {"processes": 4, "num_classes": 5, "epochs": 5, "checkpoint_dir": "runs/ch4/ex4"}
RIGHT = ("torchrun --standalone --nproc-per-node=4 -m helpers.pipeline --device cpu "
         "--num-classes 5 --epochs 5 --checkpoint-dir runs/ch4/ex4")


def test_torchrun_right_answers(capsys):
    assert check_torchrun_command(RIGHT, **GOAL)
    out = capsys.readouterr().out
    assert out.startswith("[OK] torchrun starts 4 processes on this machine; each runs "
                          "helpers.pipeline on the CPU for 5 classes, 5 epochs")
    assert out.rstrip().endswith("rank 0 writes runs/ch4/ex4/last.pt")
    as_list = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4",
               "--module", "helpers.pipeline", "--device=cpu", "--num-classes=5", "--epochs=5",
               "--checkpoint-dir=runs/ch4/ex4/"]
    assert check_torchrun_command(as_list, **GOAL)
    capsys.readouterr()
    assert check_torchrun_command(f"{RIGHT} --checkpoint-format dcp", **GOAL)  # also right
    assert capsys.readouterr().out.rstrip().endswith("every rank writes its part of runs/ch4/ex4/last")


@pytest.mark.parametrize("command, message", [
    (RIGHT.replace("--nproc-per-node=4", "--nproc-per-node=2"),
     "--nproc-per-node is 2; the exercise asks for 4 processes"),
    (RIGHT.replace(" --device cpu", ""), "--device is 'auto'.*pass --device cpu"),
    (RIGHT.replace("--num-classes 5", "--num-classes 10"), "--num-classes is 10; the widget asks for 5"),
    (RIGHT.replace("--epochs 5", "--epochs 8"), "--epochs is 8; the exercise asks for 5"),
    (RIGHT.replace("runs/ch4/ex4", "runs/other"), "--checkpoint-dir is runs/other"),
    (RIGHT.replace("-m helpers.pipeline", "helpers/pipeline.py"),
     "torchrun would run 'helpers/pipeline.py' as a script file; run the module"),
    (RIGHT.replace("--standalone", "--nnodes=2"), "--nnodes=2 waits for other machines"),
    (RIGHT + " --resume", "--resume continues an earlier run"),
    (RIGHT.replace("torchrun", "python"), "start it with torchrun"),
    (RIGHT + " --nproc-per-node=4", "comes after the script, so torchrun never sees it"),
    (RIGHT.replace("--standalone", "--standalone --bogus"), "torchrun would refuse these arguments"),
])
def test_torchrun_wrong_answers(command, message):
    with pytest.raises(ExerciseError, match=message):
        check_torchrun_command(command, **GOAL)


# The notebook checkers: one line, never raise, return None -----------------------------------------

def _line(capsys):
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.rstrip("\n")


def test_notebook_checkers_say_todo_for_the_scaffolds(capsys):
    old = _old(3)

    def predict_digits(model, X, class_names):
        ...

    def resume_training(path, model, optimizer, scheduler, data, epochs):
        ...

    assert ch4.check_extended_model(None, old, num_classes=6, example=_x()) is None
    assert _line(capsys) == f"[TODO] {ch4.TODO_EXTENDED}"
    assert ch4.check_predict_function(predict_digits, _model(), _x(16), NAMES) is None
    assert _line(capsys) == f"[TODO] {ch4.TODO_PREDICT}"
    assert ch4.check_resume_training(resume_training) is None
    assert _line(capsys) == f"[TODO] {ch4.TODO_RESUME}"
    for scaffold in (None, ...):
        assert ch4.check_torchrun_command(scaffold, **GOAL) is None
        assert _line(capsys) == f"[TODO] {ch4.TODO_TORCHRUN}"


def test_notebook_checkers_print_the_wrong_answers_messages(capsys):
    old = _old(3)
    assert ch4.check_extended_model(copy.deepcopy(old), old, num_classes=6, example=_x()) is None
    assert _line(capsys).startswith("[TRY AGAIN] your head outputs 3 classes; the widget asks "
                                    "for 6")

    def no_eval(model, X, class_names):
        with torch.inference_mode():
            return [class_names[i] for i in model(X).argmax(1).tolist()]

    assert ch4.check_predict_function(no_eval, _model(), _x(16), NAMES) is None
    assert _line(capsys).startswith("[TRY AGAIN] the model was in training mode while it "
                                    "predicted")
    assert ch4.check_resume_training(lambda *args: {}["model"]) is None
    assert _line(capsys).startswith("[TRY AGAIN] calling resume(path, model, optimizer, "
                                    "scheduler, data, epochs) failed with KeyError")
    command = RIGHT.replace("--nproc-per-node=4", "--nproc-per-node=2")
    assert ch4.check_torchrun_command(command, **GOAL) is None
    assert _line(capsys) == ("[TRY AGAIN] --nproc-per-node is 2; the exercise asks for 4 "
                             "processes")


def test_notebook_checker_says_ok_for_a_right_answer(capsys):
    assert ch4.check_torchrun_command(RIGHT, **GOAL) is None
    assert _line(capsys).startswith("[OK] torchrun starts 4 processes on this machine")


# The solutions, exec'd in a namespace like the notebook's ------------------------------------------

def _namespace(num_classes=6, old_classes=3):
    return {"settings": SimpleNamespace(num_classes=num_classes, device="cpu"),
            "arch": dict(width=8, depth=1), "old_model": _old(old_classes),
            "old_classes": old_classes, "num_classes": num_classes}


def test_solutions_cover_every_exercise():
    assert sorted(SOLUTIONS) == [1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="no exercise 6"):
        solution(6)


def test_solution_1_passes(capsys):
    namespace = _namespace()
    exec(solution(1), namespace)
    assert check_extended_model(namespace["extended"], namespace["old_model"], num_classes=6,
                                example=_x())


def test_solution_2_passes():
    namespace = _namespace()
    exec(solution(2), namespace)
    assert check_predict_function(namespace["predict_digits"], _model(), _x(16), NAMES)


def test_solution_3_passes():
    namespace = _namespace()
    exec(solution(3), namespace)
    assert check_resume_training(namespace["resume_training"])


def test_solution_4_passes():
    namespace = _namespace(num_classes=5)
    exec(solution(4), namespace)
    assert check_torchrun_command(namespace["command"], **GOAL)


# Exercise 5: a cautious prediction that torch.export can trace --------------------------------

check_cautious_predict = ch4.check_cautious_predict.__wrapped__


def _confident_net():
    # a linear classifier: its confidence varies from image to image, some above 0.9, some below
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)).eval()
    with torch.no_grad():
        net[1].weight.mul_(4)
    return net


def _cautious_right(logits, threshold=0.9):
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    return torch.where(confidence >= threshold, predicted, -1)


def _cautious_python_if(logits, threshold=0.9):
    confidence, predicted = logits.softmax(dim=1).max(dim=1)
    if (confidence < threshold).any():  # a branch on the values: export cannot trace it
        return torch.where(confidence >= threshold, predicted, -1)
    return predicted


def test_cautious_scaffold_prints_todo(capsys):
    def cautious_predict(logits, threshold=0.9): ...

    assert ch4.check_cautious_predict(cautious_predict, _confident_net(), _x(20)) is None
    assert capsys.readouterr().out == f"[TODO] {ch4.TODO_CAUTIOUS}\n"


@pytest.mark.parametrize("wrong, message", [
    (lambda logits, threshold=0.9: logits.argmax(dim=1), "no -1 where the model is unsure"),
    (lambda logits, threshold=0.9: [int(i) for i in logits.argmax(dim=1)], "returned a list"),
    (lambda logits, threshold=0.9: logits.softmax(dim=1), r"returned shape \(7, 3\)"),
    (lambda logits, threshold=0.9: torch.where(logits.max(dim=1).values >= threshold,
                                               logits.argmax(dim=1), -1),
     r"instead of \[0, -1, 2, -1, 0, 1, 1\]"),
    (lambda logits: logits.argmax(dim=1), "calling your function failed with TypeError"),
])
def test_cautious_wrong_answers_say_what_to_change(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_cautious_predict(wrong, _confident_net(), _x(20))


@pytest.mark.slow
def test_cautious_python_if_is_refused_by_torch_export(capsys):
    with pytest.raises(ExerciseError, match=r"torch.export could not trace your function .*"
                                            r"data-dependent.*torch\.where"):
        check_cautious_predict(_cautious_python_if, _confident_net(), _x(20))
    ch4.check_cautious_predict(_cautious_python_if, _confident_net(), _x(20))
    out = capsys.readouterr().out
    assert out.startswith("[TRY AGAIN] torch.export could not trace") and out.count("\n") == 1


@pytest.mark.slow
def test_cautious_right_answer_and_solution_pass():
    net, X = _confident_net(), _x(40)
    labels = _cautious_right(net(X), 0.9)
    assert (labels == -1).any() and (labels >= 0).any()  # the check sees both kinds of rows
    assert check_cautious_predict(_cautious_right, net, X) is True
    namespace = {}
    exec(str(solution(5)), namespace)
    assert check_cautious_predict(namespace["cautious_predict"], net, X) is True
