"""Issue 13: every bad checkpoint input is refused cleanly and nothing is half-applied.

One test (or a few) per defect of the issue; each failed (or hung) on the code before the fix.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers.checkpoint import (
    BestAndLast,
    CheckpointError,
    FolderLock,
    checkpoint_summary,
    load_checkpoint,
    load_weights,
    remove_stale_temps,
    save_checkpoint,
    save_weights,
    state_dicts_equal,
    strip_prefixes,
    temp_path_for,
)
from helpers.training import History


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _trained(seed: int = 0):
    net = _net(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    net(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return net, optimizer, scheduler


def _finishes(call, timeout: float = 20.0):
    """Run ``call`` in a thread; return (finished, result or exception). A hang is a failure."""
    box: dict = {}

    def target():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive(), box.get("value")


def _rng_now():
    return random.getstate(), np.random.get_state(legacy=False)["state"]["pos"], torch.get_rng_state()


def _same_rng(a, b) -> bool:
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


# --- item 2: load_checkpoint validates everything before it applies anything ----------------------


def _crafted(tmp_path: Path, name: str, change) -> Path:
    net, optimizer, scheduler = _trained(seed=1)
    path = save_checkpoint(tmp_path / "good.pt", model=net, optimizer=optimizer,
                           scheduler=scheduler, epoch=3, best_acc=0.5)
    obj = torch.load(path, weights_only=True)
    change(obj)
    torch.save(obj, tmp_path / name)
    return tmp_path / name


BAD_FIELDS = [
    ("epoch", lambda o: o.update(epoch="abc"), r"epoch is 'abc', not a whole number"),
    ("rng_python", lambda o: o["rng"].update(python="x"), r"rng\['python'\] is not a valid"),
    ("rng_torch", lambda o: o["rng"].update(torch=torch.zeros(5)), r"rng\['torch'\] is not a valid"),
    ("rng_numpy", lambda o: o["rng"].update(numpy={"key": 1}), r"rng\['numpy'\] is not a valid"),
    ("rng_cuda", lambda o: o["rng"].update(cuda=[torch.zeros(3)]), r"rng\['cuda'\] is not a valid"),
    ("rng_type", lambda o: o.update(rng=[1, 2]), r"its rng entry is \[1, 2\]"),
    ("optimizer", lambda o: o["optimizer"]["param_groups"].append(
        dict(o["optimizer"]["param_groups"][0])), r"the optimizer state does not fit"),
    ("extra_key", lambda o: o["model"].update({"extra.weight": torch.zeros(1)}),
     r"its keys do not match the model \(0 missing, 1 unexpected\)"),
]


@pytest.mark.parametrize("name, change, message", BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_a_bad_field_is_one_checkpoint_error_and_nothing_is_applied(tmp_path, name, change, message):
    path = _crafted(tmp_path, f"{name}.pt", change)
    net, optimizer, scheduler = _trained(seed=2)
    before = ({k: v.clone() for k, v in net.state_dict().items()}, dict(scheduler.state_dict()))
    before_momentum = {k: v["momentum_buffer"].clone() for k, v in optimizer.state.items()}
    rng = _rng_now()
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, model=net, optimizer=optimizer, scheduler=scheduler)
    assert state_dicts_equal(net.state_dict(), before[0])
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], m) for p, m in before_momentum.items())
    assert len(optimizer.param_groups) == 1 and optimizer.param_groups[0]["lr"] == 0.05
    assert scheduler.state_dict() == before[1]
    assert _same_rng(rng, _rng_now())


def test_a_good_checkpoint_still_restores_everything(tmp_path):
    net, optimizer, scheduler = _trained(seed=1)
    path = save_checkpoint(tmp_path / "c.pt", model=net, optimizer=optimizer, scheduler=scheduler,
                           epoch=3, best_acc=0.5)
    expected = torch.rand(3)
    other, opt2, sched2 = _trained(seed=2)
    info = load_checkpoint(path, model=other, optimizer=opt2, scheduler=sched2)
    assert (info["epoch"], info["start_epoch"], info["best_acc"]) == (3, 4, 0.5)
    assert state_dicts_equal(other.state_dict(), net.state_dict())
    assert sched2.state_dict() == scheduler.state_dict()
    assert torch.equal(torch.rand(3), expected)  # the RNG came back to where it was saved


def test_load_weights_with_a_strict_key_mismatch_changes_nothing(tmp_path):
    path = save_weights({**_net(1).state_dict(), "extra.bias": torch.zeros(2)}, tmp_path / "w.pt")
    net = _net(2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError, match="1 unexpected"):
        load_weights(net, path)
    assert state_dicts_equal(net.state_dict(), before)


# --- item 3: a full disk is a CheckpointError that says so ----------------------------------------


def test_torchs_short_write_error_becomes_disk_full(tmp_path, monkeypatch):
    path = save_weights(_net(), tmp_path / "w.pt")
    before = path.read_bytes()
    real_save = torch.save

    def short_write(obj, f, *args, **kwargs):
        if ".tmp-" in str(getattr(f, "name", "")):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(CheckpointError, match=r"the disk is full: the file needs [\d.]+ KiB, "):
        save_weights(_net(1), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs (root on Linux only): a real full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_keeps_the_old_file_and_says_the_disk_is_full(tiny_disk):
    small = save_checkpoint(tiny_disk / "last.pt", model=nn.Linear(2, 2), epoch=0)
    before = small.read_bytes()
    with pytest.raises(CheckpointError, match=r"the disk is full: the file needs [\d.]+ KiB, "
                                              r"[\d.]+ (KiB|bytes) free"):
        save_checkpoint(small, model=nn.Linear(200, 200), epoch=1)
    assert small.read_bytes() == before
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["last.pt"]
    assert load_checkpoint(small, model=nn.Linear(2, 2))["epoch"] == 0


# --- item 4: temp files of killed saves are removed by the next save or load ----------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_next_save_removes_temps_of_dead_processes_only(tmp_path):
    dead = tmp_path / f".last.pt.tmp-{_dead_pid()}"
    alive = tmp_path / f".best.pt.tmp-{os.getppid()}"  # a process that runs
    mine = temp_path_for(tmp_path / "other.pt")
    unrelated = tmp_path / ".notes.tmp-x"
    for path in (dead, alive, mine, unrelated):
        path.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "last.pt", model=_net(), epoch=0)
    assert not dead.exists() and alive.exists() and mine.exists() and unrelated.exists()


def test_load_checkpoint_removes_them_too(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", model=_net(), epoch=0)
    dead = tmp_path / f".last.pt.tmp-{_dead_pid()}"
    dead.write_bytes(b"x")
    load_checkpoint(path, model=_net())
    assert not dead.exists()
    assert remove_stale_temps(tmp_path / "missing-folder") == []


# --- item 5: one run per folder ------------------------------------------------------------------


def test_a_second_lock_on_a_folder_is_refused_naming_the_holder(tmp_path):
    with FolderLock(tmp_path / "run"):
        with pytest.raises(CheckpointError, match=rf"another run is using this folder \(process "
                                                  rf"{os.getpid()} on "):
            FolderLock(tmp_path / "run").acquire()
    with FolderLock(tmp_path / "run"):  # released: free again
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = ("import sys, time; from helpers.checkpoint import FolderLock; "
            "lock = FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=f"process {holder.pid} on "):
            FolderLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    FolderLock(tmp_path).acquire().release()


def test_a_file_is_not_a_folder_to_lock(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="this is a file, not a folder"):
        FolderLock(tmp_path / "f").acquire()


# --- item 8: the smaller ones ---------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_instead_of_blocking_forever(tmp_path):
    fifo = tmp_path / "last.pt"
    os.mkfifo(fifo)
    for call in (lambda: load_weights(_net(), fifo), lambda: checkpoint_summary(fifo),
                 lambda: load_checkpoint(fifo, model=_net())):
        finished, result = _finishes(call)
        assert finished, "blocked on the FIFO"
        assert isinstance(result, CheckpointError) and "not a regular file" in str(result)
    with contextlib.suppress(OSError):  # release any reader left blocked by a regression
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.parametrize("prefixes", [("..",), (".",), ("a..",), ("",), (1,), "module."])
def test_bad_prefixes_are_a_value_error_not_an_endless_loop(prefixes):
    finished, result = _finishes(lambda: strip_prefixes(_net().state_dict(), prefixes), timeout=10)
    assert finished, f"strip_prefixes(..., {prefixes!r}) did not return"
    assert isinstance(result, ValueError), result


def test_multi_part_prefixes_still_work():
    assert list(strip_prefixes({"a.b.fc.w": 0, "fc.b": 1}, ("a.b.",))) == ["fc.w", "fc.b"]


def test_a_non_string_key_is_a_value_error():
    with pytest.raises(ValueError, match=r"keys must be strings .* got 1 \(int\)"):
        strip_prefixes({1: torch.zeros(1)})


def test_summary_of_a_deeply_nested_file_is_bounded(tmp_path):
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)
    # Python's own pickler (pickle._Pickler): the C one stops near 750 levels on Python 3.12
    # whatever the recursion limit, and the crafted file needs 5000.
    pure = types.SimpleNamespace(Pickler=pickle._Pickler, Unpickler=pickle._Unpickler, __name__="pickle")
    try:  # pickling the crafted file needs the deep stack, reading it must not
        torch.save({"epoch": 1, "deep": nested, "x": torch.zeros(2)}, tmp_path / "deep.pt",
                   pickle_module=pure)
    finally:
        sys.setrecursionlimit(limit)
    finished, result = _finishes(lambda: checkpoint_summary(tmp_path / "deep.pt"))
    assert finished and isinstance(result, str), result
    assert "tensors in file: 1, 2 values" in result


def test_an_unreadable_file_is_a_checkpoint_error(tmp_path, monkeypatch):
    path = save_weights(_net(), tmp_path / "w.pt")
    real_open = open

    def guarded(file, *args, **kwargs):
        if Path(str(file)) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded)
    with pytest.raises(CheckpointError, match="permission denied"):
        load_weights(_net(), path)


# --- issue 11 item 2: the summary rounds what it prints -------------------------------------------


def test_summary_rounds_schedule_values_and_marks_measurements(tmp_path):
    net = _net()
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.0029289321881345253)
    history = History(epoch=[0, 1, 2], train_loss=[1.2345, 0.8, 0.5], train_acc=[0.27084988, 0.6, 0.8],
                      val_loss=[1.0, 0.5, 0.3], val_acc=[0.3, 0.5, 0.6691449814126395],
                      lr=[0.02, 0.017071067811865476, 0.01])
    path = save_checkpoint(tmp_path / "last.pt", model=net, optimizer=optimizer, epoch=2,
                           history=history.to_dict(), val_acc=0.6691449814126395, world_size=1,
                           config={"lr": 0.01, "dropout": 0.1, "epochs": 8})
    text = checkpoint_summary(path)
    assert "lr 0.00293\n" in text
    assert "val_acc=≈0.67" in text and "world_size=1" in text
    assert "'epoch': [0, 1, 2]" in text and "'train_loss': ≈[1.23, 0.80, 0.50]" in text
    assert "config={'lr': 0.01, 'dropout': 0.1, 'epochs': 8}" in text
    assert "0.0029289321881345253" not in text and "0.6691449814126395" not in text


# --- issue 12 #20: BestAndLast ---------------------------------------------------------------------


def _history(values, key="val_acc") -> History:
    history = History()
    for epoch, value in enumerate(values):
        history.append(epoch=epoch, train_loss=1.0, train_acc=0.5, val_loss=1.0, val_acc=0.5, lr=0.1)
        getattr(history, key)[-1] = value
    return history


def _run(callback, values, key="val_acc"):
    written = []
    for epoch in range(len(values)):
        callback(epoch, _history(values[:epoch + 1], key))
        best = callback.best_path
        written.append(torch.load(best, weights_only=True)["epoch"] if best.exists() else None)
    return written


def test_best_and_last_writes_last_every_epoch_and_best_on_improvement(tmp_path):
    net, optimizer, scheduler = _trained()
    save = BestAndLast(tmp_path, model=nn.DataParallel(net), optimizer=optimizer,
                       scheduler=scheduler, class_names=["a", "b", "c"])
    assert _run(save, [0.5, 0.7, 0.6, 0.7, float("nan"), 0.8]) == [0, 1, 1, 1, 1, 5]
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert last["epoch"] == 5 and "optimizer" in last and "scheduler" in last
    assert "optimizer" not in best and best["best_acc"] == last["best_acc"] == 0.8
    assert best["class_names"] == ["a", "b", "c"] and len(best["history"]["val_acc"]) == 6
    assert not any(k.startswith("module.") for k in last["model"])
    assert (save.best, save.best_epoch) == (0.8, 5)
    info = load_checkpoint(tmp_path / "last.pt", model=_net(3), optimizer=optimizer,
                           scheduler=scheduler)
    assert info["start_epoch"] == 6


def test_best_and_last_min_mode_resume_and_no_save(tmp_path):
    save = BestAndLast(tmp_path / "loss", model=_net(), metric="val_loss", mode="min",
                       best_key="best_loss")
    assert _run(save, [1.0, 0.5, 0.7, 0.4], key="val_loss") == [0, 1, 1, 3]
    resumed = BestAndLast(tmp_path / "resumed", model=_net(), best=0.9)
    assert _run(resumed, [0.5, 0.95]) == [None, 1]
    continued = BestAndLast(tmp_path / "continued", model=_net())  # a resumed fit's history
    continued(2, _history([0.5, 0.9, 0.8]))
    assert continued.best == 0.9 and not continued.best_path.exists()
    continued(3, _history([0.5, 0.9, 0.8, 0.91]))
    assert continued.best_path.exists() and continued.best_epoch == 3
    quiet = BestAndLast(tmp_path / "quiet", model=_net(), save=False)
    quiet(0, _history([0.5]))
    assert not (tmp_path / "quiet").exists() and quiet.best == 0.5


def test_best_and_last_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'max'"):
        BestAndLast(tmp_path, model=_net(), mode="up")
    with pytest.raises(ValueError, match="the history has no 'val_f1' values"):
        BestAndLast(tmp_path, model=_net(), metric="val_f1")(0, _history([0.5]))


# --- item 10: helpers.checkpoint is a package of single-purpose modules ----------------------------

PUBLISHED = ["CheckpointError", "IncompatibleKeys", "checkpoint_summary", "load_checkpoint",
             "load_weights", "load_whole_model", "outputs_equal", "save_checkpoint", "save_weights",
             "state_dicts_equal", "strip_prefixes", "temp_path_for", "unwrap_model", "FORMAT",
             "WRAPPER_PREFIXES", "WEIGHT_KEYS", "RESERVED_KEYS", "PathLike", "_atomic_write", "_read"]


def test_checkpoint_is_a_package_of_small_modules_with_the_same_api(capsys):
    import helpers.checkpoint as package
    from helpers.modify import show_source

    folder = Path(package.__file__).parent
    assert folder.name == "checkpoint" and not (folder.parent / "checkpoint.py").exists()
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert len(sizes) >= 6 and max(sizes.values()) <= 300, sizes
    missing = [name for name in PUBLISHED if not hasattr(package, name)]
    assert not missing
    show_source(package._atomic_write)  # chapter 3 shows it
    assert capsys.readouterr().out.startswith("def _atomic_write(path: Path, write:")
