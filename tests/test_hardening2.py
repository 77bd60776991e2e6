"""Issue 19 (hardening, round 2): planted links, threads, odd paths, zip bombs, odd tensors.

One test (or a few) per item of the issue; each failed on the code before the fix. The CLI and
export items are in ``test_hardening2_cli.py``.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.checkpoint import (
    CheckpointError,
    FolderLock,
    checkpoint_summary,
    load_checkpoint,
    load_weights,
    load_whole_model,
    remove_stale_temps,
    save_checkpoint,
    save_weights,
    state_dicts_equal,
)

LOADERS = {
    "load_weights": lambda p: load_weights(nn.Linear(2, 2), p),
    "load_checkpoint": lambda p: load_checkpoint(p, model=nn.Linear(2, 2)),
    "load_whole_model": lambda p: load_whole_model(p),
    "checkpoint_summary": checkpoint_summary,
}


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


# --- item 2: nothing is ever written through a link planted in a training folder ------------------


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").symlink_to(target)
    with pytest.raises(CheckpointError, match=r"\.lock: it is a symbolic link"):
        FolderLock(folder).acquire()
    assert target.read_text() == "keep me\n"


def test_the_pipeline_refuses_a_linked_lock_with_one_error_line(tmp_path, capsys):
    from helpers import pipeline

    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").symlink_to(target)
    assert pipeline.main(["--checkpoint-dir", str(folder), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1 and "symbolic link" in err
    assert target.read_text() == "keep me\n"


def test_planted_temp_links_are_never_written_through(tmp_path):
    target = tmp_path / "precious.bin"
    target.write_bytes(b"keep me")
    folder = tmp_path / "run"
    folder.mkdir()
    pid = os.getpid()
    for planted in range(max(2, pid - 20), pid + 200):  # the old name was .last.pt.tmp-<pid>
        (folder / f".last.pt.tmp-{planted}").symlink_to(target)
    path = save_checkpoint(folder / "last.pt", model=_net(), epoch=0)
    assert target.read_bytes() == b"keep me"
    assert path.is_file() and not path.is_symlink()
    assert load_checkpoint(path, model=_net())["epoch"] == 0
    assert not [p for p in folder.iterdir() if p.is_symlink()]  # the links were removed, not followed


def test_stale_temp_cleanup_removes_links_without_following_them(tmp_path):
    target = tmp_path / "precious.bin"
    target.write_bytes(b"keep me")
    link = tmp_path / f".best.pt.tmp-{os.getpid()}-1-abcd"
    link.symlink_to(target)
    dangling = tmp_path / ".best.pt.tmp-1"
    dangling.symlink_to(tmp_path / "nowhere")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([link, dangling])
    assert target.read_bytes() == b"keep me" and not link.is_symlink()


def test_a_link_at_the_target_is_replaced_not_followed(tmp_path):
    target = tmp_path / "precious.bin"
    target.write_bytes(b"keep me")
    (tmp_path / "w.pt").symlink_to(target)
    path = save_weights(_net(), tmp_path / "w.pt")
    assert target.read_bytes() == b"keep me" and not path.is_symlink()


# --- item 7: two threads saving one path ----------------------------------------------------------


def test_two_threads_saving_one_path_never_collide(tmp_path):
    path = tmp_path / "last.pt"
    errors: list[BaseException] = []
    nets = {seed: _net(seed) for seed in range(3)}  # built here: torch's seed is process-wide

    def saver(seed: int) -> None:
        try:
            for epoch in range(15):
                save_checkpoint(path, model=nets[seed], epoch=epoch, seed=seed)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=saver, args=(seed,)) for seed in nets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    info = load_checkpoint(path, model=(net := _net()), restore_rng=False)
    assert info["epoch"] == 14
    assert state_dicts_equal(net.state_dict(), nets[info["seed"]].state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


# --- item 8 and Low: odd paths are CheckpointErrors that say what to do ---------------------------


@pytest.mark.parametrize("loader", LOADERS)
def test_a_symlink_loop_is_a_checkpoint_error(tmp_path, loader):
    loop = tmp_path / "loop.pt"
    loop.symlink_to(loop)
    with pytest.raises(CheckpointError, match="symbolic link loop"):
        LOADERS[loader](loop)


@pytest.mark.parametrize("loader", LOADERS)
def test_odd_names_are_checkpoint_errors(tmp_path, loader):
    cases = {tmp_path / "missing.pt": "no such checkpoint file",
             tmp_path / ("x" * 300 + ".pt"): "name is too long",
             Path(f"{tmp_path}/a\x00b.pt"): "null byte"}
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            LOADERS[loader](path)


@pytest.mark.parametrize("loader", LOADERS)
def test_permission_denied_is_a_checkpoint_error(tmp_path, monkeypatch, loader):
    # A folder without search permission (root ignores chmod, so stat is made to say it).
    path = tmp_path / "locked" / "w.pt"
    real_stat = os.stat

    def no_permission(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_stat(file, *args, **kwargs)

    monkeypatch.setattr(os, "stat", no_permission)
    with pytest.raises(CheckpointError, match="permission denied"):
        LOADERS[loader](path)


def test_saving_to_odd_names_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="name is too long"):
        save_weights(_net(), tmp_path / ("x" * 300 + ".pt"))
    with pytest.raises(CheckpointError, match="null byte"):
        save_weights(_net(), Path(f"{tmp_path}/a\x00b.pt"))


# --- item 9: a zip bomb is refused before it is inflated -----------------------------------------


def test_a_zip_bomb_is_refused_before_torch_reads_it(tmp_path):
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data.pkl", b"\0" * (64 << 20))  # 64 MiB from about 64 KiB
        archive.writestr("bomb/version", b"3\n")
    assert path.stat().st_size < 1 << 20
    for loader in LOADERS.values():
        with pytest.raises(CheckpointError, match=r"would inflate to 64\.0 MiB .*zip bomb"):
            loader(path)


def test_a_real_checkpoint_is_within_the_bound(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", model=_net(), epoch=0, notes="x" * 10_000)
    buffer = io.BytesIO(path.read_bytes())
    with zipfile.ZipFile(buffer) as archive:
        total = sum(info.file_size for info in archive.infolist())
    assert total <= path.stat().st_size
    assert load_checkpoint(path, model=_net())["notes"] == "x" * 10_000


# --- item 4: odd tensors are refused before anything is copied -----------------------------------


def _odd(kind: str, tensor: torch.Tensor) -> torch.Tensor:
    if kind == "sparse":
        return tensor.to_sparse()
    if kind == "meta":
        return torch.empty_like(tensor, device="meta")
    if kind == "quantized":
        return torch.quantize_per_tensor(tensor, 0.1, 0, torch.qint8)
    if kind == "complex":
        return tensor.to(torch.complex64)
    return tensor.to(torch.int64)  # "integer"


ODD = {"sparse": "sparse tensor", "meta": "meta tensor", "quantized": "quantized tensor",
       "complex": "dtype torch.complex64", "integer": "dtype torch.int64"}


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", ODD)
def test_odd_tensors_are_refused_and_the_model_is_unchanged(tmp_path, kind):
    state = _net(1).state_dict()
    state["3.weight"] = _odd(kind, state["3.weight"])  # the last layer: 5 tensors come before it
    torch.save(state, tmp_path / "w.pt")
    net = _net(2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"3\.weight (is a|has) {ODD[kind]}"):
        load_weights(net, tmp_path / "w.pt")
    assert state_dicts_equal(net.state_dict(), before)
    with pytest.raises(CheckpointError, match=ODD[kind]):
        _load_tampered(tmp_path, {"model": state}, net)
    assert state_dicts_equal(net.state_dict(), before)


def _load_tampered(tmp_path: Path, changes: dict, net: nn.Module):
    path = save_checkpoint(tmp_path / "c.pt", model=_net(1), epoch=0)
    obj = torch.load(path, weights_only=True)
    obj.update(changes)
    torch.save(obj, path)
    return load_checkpoint(path, model=net)


# --- item 11: a tampered checkpoint is one CheckpointError naming the field, nothing applied -------


def _trained(seed: int = 0):
    net = _net(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    net(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return net, optimizer, scheduler


def _first_state(o: dict) -> dict:
    return o["optimizer"]["state"][0]


TAMPERED = [
    ("negative_epoch", lambda o: o.update(epoch=-5), r"its epoch is -5, not from 0 to"),
    ("huge_epoch", lambda o: o.update(epoch=2**62), r"its epoch is \d+, not from 0 to"),
    ("momentum_shape", lambda o: _first_state(o).update(momentum_buffer=torch.zeros(3)),
     r"optimizer\['state'\]\[0\]\['momentum_buffer'\] has shape \[3\], but its parameter has "
     r"\[8, 4\]"),
    ("momentum_sparse", lambda o: _first_state(o).update(
        momentum_buffer=torch.zeros(8, 4).to_sparse()), r"\['momentum_buffer'\] is a sparse"),
    ("state_for_no_param", lambda o: o["optimizer"]["state"].update({99: {}}),
     r"optimizer\['state'\]\[99\] belongs to no parameter"),
    ("lr_text", lambda o: o["optimizer"]["param_groups"][0].update(lr="fast"),
     r"optimizer\['param_groups'\]\[0\]\['lr'\] is 'fast', not a number"),
    ("lr_nan", lambda o: o["optimizer"]["param_groups"][0].update(lr=float("nan")),
     r"\['lr'\] is nan, not a finite number"),
    ("lr_negative", lambda o: o["optimizer"]["param_groups"][0].update(lr=-1.0),
     r"\['lr'\] is -1.0, below 0"),
    ("param_count", lambda o: o["optimizer"]["param_groups"][0]["params"].pop(),
     r"optimizer\['param_groups'\]\[0\] has 5 parameters, the optimizer's group 6"),
    ("scheduler_type", lambda o: o["scheduler"].update(last_epoch="x"),
     r"the scheduler state does not fit: scheduler\['last_epoch'\] is 'x', not a number"),
    ("scheduler_range", lambda o: o["scheduler"].update(step_size=-3),
     r"scheduler\['step_size'\] is -3, below 1"),
    ("scheduler_unexpected", lambda o: o["scheduler"].update(evil=1),
     r"scheduler has the unexpected field 'evil'"),
    ("scheduler_list", lambda o: o["scheduler"].update(base_lrs=[0.1, 0.2]),
     r"scheduler\['base_lrs'\] is 2, expected a list of 1"),
]


@pytest.mark.parametrize("name, change, message", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_a_tampered_field_is_named_and_nothing_is_applied(tmp_path, name, change, message):
    net, optimizer, scheduler = _trained(seed=1)
    path = save_checkpoint(tmp_path / "good.pt", model=net, optimizer=optimizer,
                           scheduler=scheduler, epoch=3)
    obj = torch.load(path, weights_only=True)
    change(obj)
    torch.save(obj, path)
    net, optimizer, scheduler = _trained(seed=2)
    before = ({k: v.clone() for k, v in net.state_dict().items()}, dict(scheduler.state_dict()))
    momentum = {k: v["momentum_buffer"].clone() for k, v in optimizer.state.items()}
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path, model=net, optimizer=optimizer, scheduler=scheduler)
    assert state_dicts_equal(net.state_dict(), before[0])
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], m) for p, m in momentum.items())
    assert scheduler.state_dict() == before[1] and optimizer.param_groups[0]["lr"] == 0.05


# --- item 10: History.from_dict / to_dict are bounded --------------------------------------------


def test_history_from_dict_refuses_nested_and_unknown_values_and_to_dict_is_shallow():
    from helpers.training import MAX_HISTORY, History

    bomb: list = [0.5]
    for _ in range(40):
        bomb = [bomb, bomb]  # 2**40 leaves by reference
    with pytest.raises(ValueError, match=r"history\['val_acc'\] must hold numbers, got list"):
        History.from_dict({"val_acc": bomb})
    with pytest.raises(ValueError, match="unexpected key 'evil'"):
        History.from_dict({"evil": [1]})
    with pytest.raises(ValueError, match=r"history\['epoch'\] must hold whole numbers >= 0"):
        History.from_dict({"epoch": [-1]})
    with pytest.raises(ValueError, match="at most 1,000,000"):
        History.from_dict({"lr": [0.1] * (MAX_HISTORY + 1)})
    history = History(val_acc=[bomb])  # built in code, not loaded: to_dict must not expand it
    assert history.to_dict()["val_acc"][0] is bomb
    good = History.from_dict({"epoch": [0, 1], "val_acc": [0.5, 0.75], "lr": [1, 0.5]})
    assert History.from_dict(good.to_dict()) == good


# --- Low: a parameter named "pt" (or "format") survives safetensors; metadata of module "ab" ------


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pt = nn.Parameter(torch.arange(3.0))
        self.format = nn.Parameter(torch.ones(2))
        self.lin = nn.Linear(2, 2)


def test_parameters_named_pt_and_format_survive_a_safetensors_round_trip(tmp_path):
    model = _Odd()
    model.format = model.pt  # a tie whose alias is called "format", like the metadata's key
    path = save_weights(model, tmp_path / "odd.safetensors")
    fresh = _Odd()
    fresh.format = fresh.pt
    report = load_weights(fresh, path)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert state_dicts_equal(fresh.state_dict(), model.state_dict())
    only_pt = nn.Module()
    only_pt.pt = nn.Parameter(torch.arange(3.0))  # the case: "pt" and no "format"
    save_weights(only_pt, tmp_path / "pt.safetensors")
    assert load_weights(only_pt, tmp_path / "pt.safetensors") == ([], [])


def test_strip_prefixes_keeps_module_ab_apart_from_prefix_a_b():
    from collections import OrderedDict

    from helpers.checkpoint import strip_prefixes

    state = OrderedDict([("a.b.fc.weight", 1), ("ab.weight", 2)])
    state._metadata = OrderedDict([("", {"version": 0}), ("a.b", {"version": 1}),  # type: ignore[attr-defined]
                                   ("a.b.fc", {"version": 2}), ("ab", {"version": 3})])
    stripped = strip_prefixes(state, ("a.b.",))
    assert list(stripped) == ["fc.weight", "ab.weight"]
    assert stripped._metadata == {"": {"version": 1}, "fc": {"version": 2}, "ab": {"version": 3}}
    wrapped = nn.DataParallel(_net()).state_dict()
    meta = strip_prefixes(wrapped)._metadata
    assert meta == _net().state_dict()._metadata  # the real wrapper case is unchanged
