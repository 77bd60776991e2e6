"""Sharded checkpoints (torch.distributed.checkpoint): save on N ranks, load on 1, convert, harden."""

import json
import os
import pickle
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import nn

from helpers.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from helpers.checkpoint.conversion import dcp_to_file, file_to_dcp
from helpers.checkpoint.dcp_files import (
    check_keys,
    is_dcp_folder,
    read_dcp_metadata,
    remove_stale_sharded_temps,
    shard_layout,
)
from helpers.checkpoint.sharded import (
    load_sharded,
    load_sharded_weights,
    read_sharded_extras,
    save_sharded,
)
from helpers.launch import run_torchrun
from helpers.models import TinyResNet

ROOT = Path(__file__).resolve().parents[1]
# Raw dcp.save/dcp.load without a process group say that they assume one process; so do we.
ONE_PROCESS = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")
DEMO = {"num_classes": 10, "width": 16, "depth": 1, "dropout": 0.1}  # helpers.sharding_demo's


def _parts(width=8, classes=10, seed=0):
    torch.manual_seed(seed)
    model = TinyResNet(classes, width=width, depth=1, dropout=0.3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def _steps(model, optimizer, scheduler, n=2):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        X, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        loss = F.cross_entropy(model(X), y)  # dropout draws from torch's global RNG
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture()
def saved(tmp_path):
    """A DCP checkpoint written in this process (no process group) after two steps."""
    model, optimizer, scheduler = _parts()
    _steps(model, optimizer, scheduler)
    folder = save_sharded(tmp_path / "last", model=model, optimizer=optimizer,
                          scheduler=scheduler, epoch=1, history={"val_acc": [0.5, 0.75]})
    return folder, model


# ------------------------------------------------------------------------ one process
def test_round_trip_is_bit_exact_with_the_same_number_of_processes(tmp_path):
    model, optimizer, scheduler = _parts()
    _steps(model, optimizer, scheduler)
    save_sharded(tmp_path / "last", model=model, optimizer=optimizer, scheduler=scheduler,
                 epoch=1, history={"val_acc": [0.5, 0.75]}, config={"width": 8})
    python_next = random.random()
    random.random()
    _steps(model, optimizer, scheduler)
    expected = _state(model)

    torch.manual_seed(99)  # another init and RNG: the load must put everything back
    model2, optimizer2, scheduler2 = _parts(seed=99)
    info = load_sharded(tmp_path / "last", model=model2, optimizer=optimizer2, scheduler=scheduler2)
    assert info == {"epoch": 1, "start_epoch": 2, "history": {"val_acc": [0.5, 0.75]},
                    "config": {"width": 8}}
    assert random.random() == python_next
    assert scheduler2.get_last_lr() == pytest.approx([1e-2 * 0.25])
    _steps(model2, optimizer2, scheduler2)
    assert _equal(_state(model2), expected)


def test_a_second_save_replaces_the_first_and_leaves_no_temp_folders(saved):
    folder, model = saved
    save_sharded(folder, model=model, epoch=2)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["last"]
    assert sorted(p.name for p in folder.iterdir()) == [".metadata", "__0_0.distcp"]
    assert is_dcp_folder(folder) and not is_dcp_folder(folder / ".metadata")


def test_convert_round_trip_dcp_to_file_to_dcp(saved, tmp_path):
    folder, model = saved
    path = dcp_to_file(folder, tmp_path / "last.pt")
    # Laid out like a save_checkpoint file: load_checkpoint and load_weights read it. (Its optimizer
    # state is keyed by parameter names, as DCP stores it, not by numbers.)
    model2, optimizer2, scheduler2 = _parts(seed=5)
    got = load_checkpoint(path, model=model2, optimizer=optimizer2, scheduler=scheduler2)
    assert got["start_epoch"] == 2
    assert _equal(_state(model2), _state(model))
    saved_optimizer = torch.load(path, weights_only=True)["optimizer"]
    assert list(saved_optimizer["state"])[:1] == ["stem.0.weight"]
    assert _equal(optimizer2.state_dict()["state"][0], saved_optimizer["state"]["stem.0.weight"])
    assert scheduler2.get_last_lr() == [1e-2 * 0.25]
    # names must be distinct, as ids must: a repeated one is refused before anything is applied
    state = torch.load(path, weights_only=True)
    state["optimizer"]["param_groups"][0]["params"][1] = "stem.0.weight"
    torch.save(state, tmp_path / "twice.pt")
    model5, optimizer5, _ = _parts(seed=7)
    with pytest.raises(CheckpointError, match="not distinct whole numbers or parameter names"):
        load_checkpoint(tmp_path / "twice.pt", model=model5, optimizer=optimizer5)
    model3 = TinyResNet(10, width=8, depth=1)
    load_weights(model3, path)
    assert _equal(_state(model3), _state(model))
    back = file_to_dcp(path, tmp_path / "back")
    model4, optimizer4, scheduler4 = _parts(seed=6)
    assert load_sharded(back, model=model4, optimizer=optimizer4, scheduler=scheduler4)["epoch"] == 1
    assert _equal(_state(model4), _state(model))
    assert _equal(optimizer4.state_dict()["state"][0], saved_optimizer["state"]["stem.0.weight"])


def test_weights_only_load_for_deployment(saved):
    folder, model = saved
    assert read_sharded_extras(folder) == {"epoch": 1, "history": {"val_acc": [0.5, 0.75]}}
    fresh = TinyResNet(10, width=8, depth=1)
    assert load_sharded_weights(fresh, folder) == ([], [])
    assert _equal(_state(fresh), _state(model))


# --------------------------------------------------------------------- hostile folders
def _refused(call, model, match):
    before = _state(model)
    with pytest.raises(CheckpointError, match=match):
        call()
    assert _equal(_state(model), before), "a refused checkpoint changed the model"


def test_missing_shard_file(saved):
    folder, _ = saved
    (folder / "__0_0.distcp").unlink()
    model, optimizer, scheduler = _parts(seed=3)
    _refused(lambda: load_sharded(folder, model=model, optimizer=optimizer), model,
             r"shard file __0_0.distcp is missing")


def test_truncated_shard_file(saved):
    folder, _ = saved
    shard = folder / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    model = TinyResNet(10, width=8, depth=1)
    _refused(lambda: load_sharded_weights(model, folder), model, r"__0_0.distcp is cut short")


def test_truncated_metadata(saved):
    folder, _ = saved
    index = folder / ".metadata"
    index.write_bytes(index.read_bytes()[:200])
    model = TinyResNet(10, width=8, depth=1)
    _refused(lambda: load_sharded(folder, model=model), model, r"\.metadata is damaged")


def test_metadata_with_pickled_code_is_refused_without_running_it(saved):
    folder, _ = saved
    (folder / ".metadata").write_bytes(pickle.dumps(os.getpid))  # any global outside DCP
    with pytest.raises(CheckpointError, match=r"posix.getpid is not part of a DCP index"):
        read_dcp_metadata(folder)


def test_folder_from_another_model(saved):
    folder, _ = saved
    model, optimizer, _ = _parts(width=8, classes=5)  # another class count: fc has 5 rows
    _refused(lambda: load_sharded(folder, model=model, optimizer=optimizer), model,
             r"model.fc.weight: checkpoint \[10, 8\] vs model \[5, 8\]")


@ONE_PROCESS
def test_keys_the_target_lacks_are_named_not_skipped(saved):
    """The pitfall: dcp.load ignores checkpoint keys that the target does not have."""
    folder, model = saved
    smaller = nn.Sequential()
    smaller.stem = TinyResNet(10, width=8, depth=1).stem  # only part of the model
    target = {"model": smaller.state_dict()}
    dcp.load(target, checkpoint_id=folder, no_dist=True)  # no error: fc, blocks... silently skipped
    with pytest.raises(CheckpointError, match=r"not in the target.*model\.blocks\.0"):
        check_keys(folder, {"model": smaller.state_dict()})


def test_a_file_where_a_folder_is_expected(saved, tmp_path):
    folder, model = saved
    path = tmp_path / "weights.pt"
    save_checkpoint(path, model=model, epoch=0)
    fresh = TinyResNet(10, width=8, depth=1)
    _refused(lambda: load_sharded(path, model=fresh), fresh, r"is a file, not a DCP checkpoint")
    _refused(lambda: load_sharded_weights(fresh, path), fresh, r"load it with load_checkpoint")
    with pytest.raises(CheckpointError, match="a DCP checkpoint is a folder"):
        save_sharded(path, model=model, epoch=0)


def test_a_dcp_folder_where_a_file_is_expected(saved):
    folder, _ = saved
    model, optimizer, _ = _parts(seed=4)
    said = r"(?s)is a DCP checkpoint folder .*load_sharded\(folder, model=\.\.\.\) or load_sharded_weights"
    _refused(lambda: load_checkpoint(folder, model=model, optimizer=optimizer), model, said)
    _refused(lambda: load_weights(model, folder), model, said)
    _refused(lambda: load_weights(model, folder), model, r"dcp_to_file\(folder, path\)")
    with pytest.raises(CheckpointError, match="a folder"):
        file_to_dcp(folder, folder.parent / "other")


def test_a_pickle_referring_to_getattr_is_named_the_same_on_every_torch(tmp_path):
    class Evil:
        def __reduce__(self):
            return getattr, (str, "upper")

    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "x": Evil()}, path)
    model = nn.Linear(1, 1)
    with pytest.raises(CheckpointError, match=r"\(it refers to getattr\)"):
        load_weights(model, path)


def test_a_folder_without_metadata(saved):
    folder, _ = saved
    (folder / ".metadata").unlink()
    model = TinyResNet(10, width=8, depth=1)
    _refused(lambda: load_sharded(folder, model=model), model, r"has no \.metadata")


@ONE_PROCESS
def test_a_dcp_folder_not_written_by_save_sharded_gives_weights_only(saved, tmp_path):
    folder, model = saved
    dcp.save({"model": model.state_dict()}, checkpoint_id=tmp_path / "plain", no_dist=True)
    fresh = TinyResNet(10, width=8, depth=1)
    _refused(lambda: load_sharded(tmp_path / "plain", model=fresh), fresh, "no epoch")
    load_sharded_weights(fresh, tmp_path / "plain")
    assert _equal(_state(fresh), _state(model))


# ----------------------------------------------------------------- crashes, temp folders
def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_stale_temp_folders_go_and_a_swapped_away_checkpoint_comes_back(saved):
    folder, _ = saved
    host, pid = socket.gethostname(), _dead_pid()
    old = folder.with_name(f".last.old-{host}-{pid}")
    tmp = folder.with_name(f".last.tmp-{host}-{pid}")
    os.replace(folder, old)  # killed between the two renames of a swap
    tmp.mkdir()
    (tmp / "__0_0.distcp").write_bytes(b"half")
    alive = folder.with_name(f".last.tmp-{host}-{os.getpid()}")
    alive.mkdir()  # a save of a running process stays
    assert remove_stale_sharded_temps(folder) == [tmp]
    assert is_dcp_folder(folder) and alive.exists() and not old.exists()


def _crash(tmp_path, die_in, nproc):
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    command = [sys.executable, *(launcher if nproc > 1 else []),
               str(ROOT / "tests/scripts/dcp_crash.py"), str(tmp_path), "--die-in", die_in]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode != 0 and "dies" in done.stdout, done.stdout + done.stderr[-3000:]
    return tmp_path / "last"


@pytest.mark.slow
def test_sigkill_during_a_two_process_save_keeps_the_previous_checkpoint(tmp_path):
    last = _crash(tmp_path, "write", 2)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".last.tmp-")]
    assert leftovers, "the killed save should have left its temporary folder"
    model = TinyResNet(10, width=8, depth=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    info = load_sharded(last, model=model, optimizer=optimizer)  # on 1 process
    assert (info["epoch"], info["note"]) == (0, "first")
    assert remove_stale_sharded_temps(last)
    save_sharded(last, model=model, optimizer=optimizer, epoch=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


@pytest.mark.slow
def test_sigkill_between_the_renames_keeps_the_previous_checkpoint(tmp_path):
    last = _crash(tmp_path, "swap", 1)
    assert not last.exists()  # moved aside, the new one not yet in place
    model = TinyResNet(10, width=8, depth=1)
    assert load_sharded(last, model=model)["note"] == "first"  # put back, then loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


# ------------------------------------------------------- FSDP2 on 2 gloo processes
@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    from helpers.sharding_demo import fsdp2_cpu_problem

    if fsdp2_cpu_problem():
        pytest.skip(fsdp2_cpu_problem())
    out = tmp_path_factory.mktemp("sharded")
    run_torchrun("helpers.sharding_demo", ["--out", str(out), "--check-resume"],
                 nproc_per_node=2, cwd=ROOT, timeout=300, quiet=True)
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_each_rank_file_holds_only_its_part(sharded_run):
    out, report = sharded_run
    assert [r["fc_weight_local"] for r in report["ranks"]] == [[5, 16], [5, 16]]
    assert report["ranks"][0]["placements"] == "(Shard(dim=0),)"
    chunks = shard_layout(out / "last")["model.fc.weight"]
    assert sorted(chunks) == [("__0_0.distcp", [0, 0], [5, 16]), ("__1_0.distcp", [5, 0], [5, 16])]
    assert sorted(p.name for p in (out / "last").iterdir()) == [".metadata", "__0_0.distcp",
                                                               "__1_0.distcp"]


@pytest.mark.slow
def test_saved_on_two_loads_on_one_equal(sharded_run):
    out, _ = sharded_run
    full = torch.load(out / "full_weights.pt", weights_only=True)
    model = TinyResNet(**DEMO)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=100)
    info = load_sharded(out / "last", model=model, optimizer=optimizer, scheduler=scheduler)
    assert info["epoch"] == 1 and len(info["history"]["train_loss"]) == 2
    assert _equal(_state(model), full)
    path = dcp_to_file(out / "last", out / "last.pt")  # and as one file, for deployment
    fresh = TinyResNet(**DEMO)
    load_weights(fresh, path)
    assert _equal(_state(fresh), full)


@pytest.mark.slow
def test_resume_on_two_processes_is_bit_exact(sharded_run):
    _, report = sharded_run
    assert [r["resumed_equal"] for r in report["ranks"]] == [True, True]
    assert all(r["buffers_differed"] for r in report["ranks"])  # why the demo syncs them


def test_a_failed_save_keeps_the_previous_checkpoint(saved):
    folder, model = saved
    with pytest.raises(CheckpointError, match="reserved"):
        save_sharded(folder, model=model, epoch=3, rng=1)
    with pytest.raises(CheckpointError, match="weights_only"):
        save_sharded(folder, model=model, epoch=3, when=object())
    assert load_sharded(folder, model=TinyResNet(10, width=8, depth=1))["epoch"] == 1
    shutil.rmtree(folder)


def test_a_failed_second_rename_puts_the_previous_checkpoint_back(saved, monkeypatch):
    folder, model = saved
    real_replace, calls = os.replace, []

    def replace(src, dst):  # the old folder moves aside, then the new one cannot move in
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises((OSError, CheckpointError), match="No space left on device"):
        save_sharded(folder, model=model, epoch=2)
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls[0][0] == "last" and calls[1][1] == "last", calls
    assert load_sharded(folder, model=TinyResNet(10, width=8, depth=1))["epoch"] == 1


def test_importing_the_course_modules_does_not_import_dcp():
    # torch.distributed.checkpoint costs seconds: helpers.checkpoint exports it lazily
    code = ("import sys, helpers.checkpoint as c, helpers.pipeline, helpers.deploy, helpers.export\n"
            "assert 'torch.distributed.checkpoint' not in sys.modules\n"
            "assert {'save_sharded', 'dcp_to_file', 'check_keys'} <= set(c.__all__) & set(dir(c))\n"
            "c.save_sharded, c.file_to_dcp, c.shard_layout\n"
            "assert 'torch.distributed.checkpoint' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
