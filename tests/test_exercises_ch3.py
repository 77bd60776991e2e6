"""Chapter 3 exercise checkers: a right answer passes, each typical wrong answer is explained.

The strict checkers (``check_x.__wrapped__``) raise or return True; the notebook checkers print
one ``[TODO]``/``[TRY AGAIN]``/``[OK]`` line and never raise; ``solution(n)`` passes.
"""

import copy

import pytest
import torch
from torch import nn
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from helpers.checkpoint import load_checkpoint, save_checkpoint, save_weights, strip_prefixes
from helpers.exercises import ExerciseError, ch3
from helpers.models import TinyResNet

# The strict checkers (raise ExerciseError, return True); the notebook ones only print.
check_save_for_inference = ch3.check_save_for_inference.__wrapped__
check_prefix_stripper = ch3.check_prefix_stripper.__wrapped__
check_resume = ch3.check_resume.__wrapped__
check_ready_for_inference = ch3.check_ready_for_inference.__wrapped__


def _net(seed=0):
    torch.manual_seed(seed)
    return TinyResNet(5, width=8, depth=1, dropout=0.1)


def _wrapped(seed=0):
    net = _net(seed)
    wrapped = nn.DataParallel(net)  # without GPUs it simply calls the module
    net.cpu()  # one visible GPU would have moved it
    return wrapped


def _x():
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))


# Exercise 1: save a wrapped model for inference --------------------------------------------------

def test_save_for_inference_right_answers(tmp_path, capsys):
    def with_module(model, path):
        torch.save(model.module.state_dict(), path)

    assert check_save_for_inference(with_module, _wrapped(), _x(), tmp_path / "w.pt")
    out = capsys.readouterr().out
    assert out.startswith("[OK] ") and "no wrapper prefix" in out and "TinyResNet" in out
    # save_weights unwraps too, in either file format
    assert check_save_for_inference(lambda m, p: save_weights(m, p), _wrapped(), _x(),
                                    tmp_path / "w.safetensors")


def test_save_for_inference_wrapped_state_dict_names_the_prefix(tmp_path):
    def wrapper_keys(model, path):
        torch.save(model.state_dict(), path)

    with pytest.raises(ExerciseError, match=r"keys start with 'module.' \(e.g. "
                                            r"'module.stem.0.weight'\): that is the wrapper's"):
        check_save_for_inference(wrapper_keys, _wrapped(), _x(), tmp_path / "w.pt")


def test_save_for_inference_whole_model_is_refused(tmp_path):
    with pytest.raises(ExerciseError, match=r"you saved the whole TinyResNet \(a pickled "
                                            r"nn.Module\), not its weights"):
        check_save_for_inference(lambda m, p: torch.save(m.module, p), _wrapped(), _x(),
                                 tmp_path / "w.pt")


def test_save_for_inference_other_weights_give_other_outputs(tmp_path):
    def fresh_model(model, path):
        torch.save(_net(seed=7).state_dict(), path)

    with pytest.raises(ExerciseError, match="gives different outputs than your model"):
        check_save_for_inference(fresh_model, _wrapped(), _x(), tmp_path / "w.pt")


def test_save_for_inference_missing_file_and_partial_weights(tmp_path):
    with pytest.raises(ExerciseError, match="your function did not write w.pt"):
        check_save_for_inference(lambda m, p: None, _wrapped(), _x(), tmp_path / "w.pt")

    def head_only(model, path):
        torch.save(model.module.fc.state_dict(), path)

    with pytest.raises(ExerciseError, match=r"does not load w.pt strictly: \d+ keys missing"):
        check_save_for_inference(head_only, _wrapped(), _x(), tmp_path / "w.pt")


def test_save_for_inference_training_checkpoint_is_not_for_inference(tmp_path):
    def checkpoint(model, path):
        save_checkpoint(path, model=model, epoch=0)

    with pytest.raises(ExerciseError, match="w.pt is a training checkpoint"):
        check_save_for_inference(checkpoint, _wrapped(), _x(), tmp_path / "w.pt")


def test_save_for_inference_crash_is_explained(tmp_path):
    def crash(model, path):
        raise KeyError("module")

    with pytest.raises(ExerciseError, match="failed with KeyError"):
        check_save_for_inference(crash, _wrapped(), _x(), tmp_path / "w.pt")


# Exercise 2: a prefix stripper -------------------------------------------------------------------

def _removeprefix(state_dict):
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _consume_in_place(state_dict):
    consume_prefix_in_state_dict_if_present(state_dict, "module.")
    return state_dict


@pytest.mark.parametrize("strip", [_removeprefix, _consume_in_place,
                                   lambda sd: strip_prefixes(sd, ["module."])])
def test_prefix_stripper_right_answers(strip, capsys):
    assert check_prefix_stripper(strip)
    assert capsys.readouterr().out == ("[OK] 5 cases, 16 keys: 'module.' removed where it starts "
                                       "a key, every other key left alone\n")


def test_prefix_stripper_seed_recipe_mangles_plain_keys():
    with pytest.raises(ExerciseError, match=r"without a prefix \(a plain model\) the key "
                                            r"'stem.0.weight' came back as 'weight'.*cut 7 "
                                            r"characters"):
        check_prefix_stripper(lambda sd: {k[7:]: v for k, v in sd.items()})


def test_prefix_stripper_replace_mangles_inner_module():
    with pytest.raises(ExerciseError, match=r"the key 'submodule.weight' came back as "
                                            r"'subweight'.*from inside the key"):
        check_prefix_stripper(lambda sd: {k.replace("module.", ""): v for k, v in sd.items()})


def test_prefix_stripper_lstrip_is_explained():
    with pytest.raises(ExerciseError, match=r"'modules.0.weight' came back as 's.0.weight'.*"
                                            r"characters m, o, d, u, l, e"):
        check_prefix_stripper(lambda sd: {k.lstrip("module."): v for k, v in sd.items()})


def test_prefix_stripper_in_place_without_return():
    with pytest.raises(ExerciseError, match="returned None.*return the dict afterwards"):
        check_prefix_stripper(lambda sd: consume_prefix_in_state_dict_if_present(sd, "module."))


def test_prefix_stripper_collisions_and_swapped_values():
    with pytest.raises(ExerciseError, match="returned 3 keys for 4.*those weights are lost"):
        check_prefix_stripper(lambda sd: {k.rsplit(".", 1)[-1]: v for k, v in sd.items()})

    def swapped(state_dict):
        stripped = _removeprefix(state_dict)
        keys, values = list(stripped), list(stripped.values())
        return dict(zip(keys, values[1:] + values[:1], strict=True))

    with pytest.raises(ExerciseError, match="holds another value"):
        check_prefix_stripper(swapped)


# Exercise 3: resume -------------------------------------------------------------------------------

def _resume_by_hand(path, model, optimizer, scheduler, *, load_optimizer=True,
                    load_scheduler=True, offset=1):
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["model"])
    if load_optimizer:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if load_scheduler:
        scheduler.load_state_dict(checkpoint["scheduler"])
    return checkpoint["epoch"] + offset


def test_resume_right_answers(capsys):
    assert check_resume(_resume_by_hand)
    assert capsys.readouterr().out == ("[OK] start_epoch 2 (epochs done: 2, next epoch: 3); "
                                       "model, optimizer and scheduler restored; epochs 3-4 of 4 "
                                       "match the uninterrupted run bit for bit\n")
    assert check_resume(lambda p, m, o, s: load_checkpoint(p, model=m, optimizer=o,
                                                           scheduler=s)["start_epoch"])


def test_resume_seed_article_forgets_the_scheduler():
    with pytest.raises(ExerciseError, match=r"scheduler was not restored: it counts last_epoch 0, "
                                            r"the checkpoint 2"):
        check_resume(lambda *a: _resume_by_hand(*a, load_scheduler=False))


def test_resume_without_optimizer_state():
    with pytest.raises(ExerciseError, match="the optimizer has no state"):
        check_resume(lambda *a: _resume_by_hand(*a, load_optimizer=False))


def test_resume_returning_the_saved_epoch_would_repeat_it():
    with pytest.raises(ExerciseError, match=r"returned 1, the epoch stored.*checkpoint\['epoch'\] "
                                            r"\+ 1"):
        check_resume(lambda *a: _resume_by_hand(*a, offset=0))
    with pytest.raises(ExerciseError, match="should return the epoch to start from, an int"):
        check_resume(lambda *a: float(_resume_by_hand(*a)))


def test_resume_model_not_loaded():
    def no_model(path, model, optimizer, scheduler):
        checkpoint = torch.load(path, weights_only=True)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        return checkpoint["epoch"] + 1

    with pytest.raises(ExerciseError, match="model's weights differ from the checkpoint's"):
        check_resume(no_model)


def test_resume_crash_is_explained():
    with pytest.raises(ExerciseError, match="failed with KeyError"):
        check_resume(lambda p, m, o, s: torch.load(p, weights_only=True)["optimizer_state"])


# Exercise 4: ready for inference ---------------------------------------------------------------

def test_ready_for_inference_right_answer(tmp_path, capsys):
    trained = _net(seed=3)
    save_checkpoint(tmp_path / "best.pt", model=trained, epoch=4)
    model = _net(seed=0)
    state = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)["model"]
    model.load_state_dict(state)
    model.eval()
    assert check_ready_for_inference(model, tmp_path / "best.pt", "cpu")
    assert capsys.readouterr().out == f"[OK] {len(state)} tensors equal best.pt's; all on cpu; " \
                                      f"eval mode\n"


def test_ready_for_inference_train_mode_and_unloaded(tmp_path):
    trained = _net(seed=3)
    save_weights(trained, tmp_path / "w.pt")
    model = copy.deepcopy(trained)
    with pytest.raises(ExerciseError, match=r"modules are in training mode \(e.g. the model "
                                            r"itself\).*Call model.eval\(\)"):
        check_ready_for_inference(model, tmp_path / "w.pt", "cpu")
    with pytest.raises(ExerciseError, match=r"tensors differ from w.pt's .*not loaded"):
        check_ready_for_inference(_net(seed=0).eval(), tmp_path / "w.pt", "cpu")


def test_ready_for_inference_wrong_device(tmp_path):
    model = _net(seed=3).eval()
    save_weights(model, tmp_path / "w.pt")
    with pytest.raises(ExerciseError, match="not on meta. map_location only decides"):
        check_ready_for_inference(model, tmp_path / "w.pt", "meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ready_for_inference_loaded_on_cuda_but_model_left_on_cpu(tmp_path):
    model = _net(seed=3).eval()
    save_weights(model, tmp_path / "w.pt")
    state = torch.load(tmp_path / "w.pt", map_location="cuda", weights_only=True)
    model.load_state_dict(state)  # copies into the CPU tensors: the model stays on the CPU
    with pytest.raises(ExerciseError, match="some weights sit on cpu, not on cuda"):
        check_ready_for_inference(model, tmp_path / "w.pt", "cuda")
    assert check_ready_for_inference(model.to("cuda"), tmp_path / "w.pt", "cuda")


def test_resume_checker_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    check_resume(_resume_by_hand)
    assert torch.equal(torch.rand(3), expected)


# The notebook checkers: one line, never raise, return None ---------------------------------------

def _stub_save(model, path): ...


def _stub_strip(state_dict): ...


def _stub_resume(path, model, optimizer, scheduler): ...


def _one_line(capsys, status):
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith(f"[{status}] "), out
    return out


def test_notebook_checkers_say_todo_for_the_scaffolds(tmp_path, capsys):
    save_weights(_net(seed=3), tmp_path / "best.pt")
    calls = [
        (ch3.check_save_for_inference, (_stub_save, _wrapped(), _x(), tmp_path / "w.pt"),
         "Write save_for_inference(model, path)"),
        (ch3.check_prefix_stripper, (_stub_strip,), "Write strip_module_prefix(state_dict)"),
        (ch3.check_resume, (_stub_resume,), "Write resume(path, model, optimizer, scheduler)"),
        (ch3.check_ready_for_inference, (None, tmp_path / "best.pt", "cpu"), "Build best_net"),
    ]
    for check, args, todo in calls:
        assert check(*args) is None
        assert todo in _one_line(capsys, "TODO")
    assert not (tmp_path / "w.pt").exists()  # a scaffold is not even called


def test_notebook_checkers_keep_the_explanations_of_wrong_answers(tmp_path, capsys):
    assert ch3.check_save_for_inference(lambda m, p: torch.save(m.state_dict(), p), _wrapped(),
                                        _x(), tmp_path / "w.pt") is None
    out = _one_line(capsys, "TRY AGAIN")
    assert "keys start with 'module.' (e.g. 'module.stem.0.weight'): that is the wrapper's" in out
    assert ch3.check_prefix_stripper(lambda sd: {k[7:]: v for k, v in sd.items()}) is None
    assert "the key 'stem.0.weight' came back as 'weight'" in _one_line(capsys, "TRY AGAIN")
    assert ch3.check_resume(lambda *a: _resume_by_hand(*a, load_scheduler=False)) is None
    assert "the scheduler was not restored" in _one_line(capsys, "TRY AGAIN")
    save_weights(_net(seed=3), tmp_path / "best.pt")
    assert ch3.check_ready_for_inference(_net(seed=3), tmp_path / "best.pt", "cpu") is None
    assert "Call model.eval()" in _one_line(capsys, "TRY AGAIN")


def test_notebook_checker_explains_a_crash_without_raising(capsys):
    def crash(state_dict):
        raise KeyError("module")

    assert ch3.check_prefix_stripper(crash) is None
    assert "failed with KeyError" in _one_line(capsys, "TRY AGAIN")


def test_notebook_checker_says_ok_and_returns_none(capsys):
    assert ch3.check_prefix_stripper(_removeprefix) is None
    _one_line(capsys, "OK")


# The solutions, run as the notebook runs them ------------------------------------------------------

def _run_solution(n, **namespace):
    namespace = {"torch": torch, "nn": nn, **namespace}
    exec(compile(str(ch3.solution(n)), f"solution {n}", "exec"), namespace)
    return namespace


def test_solutions_pass_the_strict_checkers(tmp_path):
    ns = _run_solution(1)
    assert check_save_for_inference(ns["save_for_inference"], _wrapped(), _x(), tmp_path / "w.pt")
    assert check_prefix_stripper(_run_solution(2)["strip_module_prefix"])
    assert check_resume(_run_solution(3)["resume"])

    class Settings:
        num_classes, device = 5, torch.device("cpu")

    torch.manual_seed(4)
    trained = TinyResNet(5, width=32, depth=1, dropout=0.1)  # section 8's architecture
    save_checkpoint(tmp_path / "best.pt", model=trained, epoch=1)
    ns = _run_solution(4, settings=Settings, folder=tmp_path)
    assert check_ready_for_inference(ns["best_net"], tmp_path / "best.pt", "cpu")


def test_solution_lookup_names_the_exercises():
    assert "removeprefix" in ch3.solution(2)
    with pytest.raises(ValueError, match=r"exercises \[1, 2, 3, 4\]; there is no exercise 5"):
        ch3.solution(5)
