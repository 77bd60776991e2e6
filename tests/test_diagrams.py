"""helpers.diagrams: every diagram builds, renders to PNG, names what it teaches, writes no file."""

from __future__ import annotations

import os

import matplotlib
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch import nn

from helpers.diagrams import (
    PIPELINE,
    checkpoint_anatomy,
    containers,
    pipeline_flowchart,
    state_dict_tree,
)

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _in_empty_folder(tmp_path, monkeypatch):
    """Run each test in an empty folder and check that nothing was written there."""
    monkeypatch.chdir(tmp_path)
    yield
    assert sorted(os.listdir(tmp_path)) == [], "a diagram wrote a file"


def labels(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def png(fig: Figure) -> bytes:
    """What a notebook front end shows: the inline backend's PNG of the figure."""
    from IPython.core.pylabtools import print_figure

    data = print_figure(fig, "png")
    assert data.startswith(b"\x89PNG"), "not a PNG"
    return data


def test_containers_names_all_four_and_the_pitfall():
    fig = containers()
    text = labels(fig)
    for name in ("nn.Sequential", "nn.ModuleList", "nn.ModuleDict", "plain list"):
        assert name in text
    assert text.count("NOT registered") == 1 and text.count("registered") == 4
    assert "for block in self.blocks" in text and "self.acts[activation]" in text
    png(fig)


def _ddp_keys() -> list[str]:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    return ["module." + key for key in model.state_dict()]


def test_state_dict_tree_marks_the_wrapper_prefix():
    keys = _ddp_keys()
    fig = state_dict_tree(keys)
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert texts.count("module.") == 1  # the prefix is one node, drawn once
    assert "weight, bias, running_mean, running_var, num_batches_tracked" in texts
    assert f"state_dict: {len(keys)} keys (blue: tensors)" in texts
    assert any("wrapper prefix 'module.'" in t for t in texts)
    png(fig)


def test_state_dict_tree_takes_a_state_dict_and_nested_prefixes():
    model = nn.Linear(3, 2)
    fig = state_dict_tree(model.state_dict())
    assert "no wrapper prefix" in labels(fig)
    nested = state_dict_tree(["_orig_mod.module.fc.weight", "_orig_mod.module.fc.bias"])
    texts = [t.get_text() for t in nested.findobj(Text)]
    assert texts.count("_orig_mod.") == 1 and texts.count("module.") == 1
    assert "wrapper prefix '_orig_mod.', 'module.'" in labels(nested)


def test_state_dict_tree_summarises_long_key_lists():
    keys = [f"layers.{i}.weight" for i in range(100)]
    fig = state_dict_tree(keys, max_lines=10)
    text = labels(fig)
    # 10 lines: "layers", then "0", "weight", "1", "weight", ... : 4 of the 100 keys are shown
    assert text.startswith("layers\n0\nweight\n1\nweight\n2\nweight\n3\nweight\n4\n")
    assert "99" not in text and "... 96 more keys" in text
    assert fig.get_figheight() < 5


def test_state_dict_tree_explains_bad_input():
    with pytest.raises(ValueError, match="got no keys; pass model.state_dict()"):
        state_dict_tree([])
    with pytest.raises(TypeError, match="keys are strings like 'fc.weight'; got 3"):
        state_dict_tree([3])


SEGMENT = st.sampled_from(["fc", "0", "1", "conv", "weight", "bias"])
KEY = st.tuples(st.sampled_from(["", "module.", "_orig_mod.", "_orig_mod.module."]),
                st.lists(SEGMENT, min_size=3, max_size=3).map(".".join)).map("".join)


@settings(max_examples=25, deadline=None)
@given(st.lists(KEY, min_size=1, max_size=12))
def test_state_dict_tree_draws_every_key_once(keys):
    """Every key (all have 3 parts after the prefixes, so none is a module) is one drawn leaf."""
    fig = state_dict_tree(keys, max_lines=1000)
    leaves = [t.get_text() for t in fig.findobj(Text) if t.get_color() == "#2b6cb0"]
    assert sum(len(text.split(", ")) for text in leaves) == len(set(keys))
    assert "more keys" not in labels(fig)


def _checkpoint() -> dict:
    model = nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2)
    return {"format": "helpers.checkpoint/1", "epoch": 3, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": {"python": 1, "torch": torch.get_rng_state()}, "best_acc": 0.91,
            "class_names": ["0", "1"]}


def test_checkpoint_anatomy_shows_each_part_and_what_is_missing():
    fig = checkpoint_anatomy(_checkpoint())
    text = labels(fig)
    for part in ("model", "optimizer", "scheduler", "epoch", "best metric", "rng", "extras"):
        assert part in text
    assert "state_dict: 2 tensors" in text and "lr 0.003" in text
    assert "epochs done: 4\nnext epoch: 5" in text  # epoch=3 is fit's 0-based index
    assert "stepped 0 times\n(its last_epoch)" in text
    assert "best_acc = 0.91" in text and "class_names" in text
    assert "AMP scaler\n\n(not saved)" in text  # this checkpoint has no GradScaler state
    png(fig)


def test_checkpoint_anatomy_reads_a_file_and_a_summary(tmp_path):
    from helpers.checkpoint import checkpoint_summary, save_checkpoint

    folder = tmp_path / "runs"
    folder.mkdir()
    model = nn.Linear(4, 2)
    path = save_checkpoint(folder / "last.pt", model=model, epoch=2, best_acc=0.5)
    from_file = labels(checkpoint_anatomy(path))
    assert "last.pt" in from_file and "epochs done: 3\nnext epoch: 4" in from_file
    assert "optimizer\n\n(not saved)" in from_file
    from_summary = labels(checkpoint_anatomy(checkpoint_summary(path)))
    assert "model" in from_summary and "best_acc" in from_summary
    assert "epochs done: 3\nnext epoch: 4" in from_summary
    path.unlink()
    folder.rmdir()


def test_checkpoint_anatomy_explains_bad_input():
    with pytest.raises(ValueError, match="found none of model, optimizer"):
        checkpoint_anatomy({"format": "mine"})
    with pytest.raises(TypeError, match="takes a checkpoint dict, a path or the text"):
        checkpoint_anatomy(42)  # type: ignore[arg-type]
    # a summary printed by the Chinese edition is not parsed: the error points at the path or dict
    with pytest.raises(ValueError, match="checkpoint's path or the loaded dict"):
        checkpoint_anatomy("last.pt：训练检查点\n已完成轮数：3，下一轮：4")


def test_pipeline_flowchart_has_every_stage_in_order():
    fig = pipeline_flowchart()
    texts = [t.get_text() for t in fig.findobj(Text)]
    stages = [stage for stage, _, _ in PIPELINE]
    assert [t for t in texts if t in stages] == stages
    assert [s.replace("\n", " ") for s in stages] == [
        "define", "train", "requirement change", "modify", "save", "deploy / load", "resume"]
    assert any(t.startswith("resume: train on from the saved epoch") for t in texts)
    png(fig)
