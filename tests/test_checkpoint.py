"""helpers.checkpoint: weights and checkpoint round trips, safety, error messages, utilities."""

import os
import pickle
import random
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from helpers import checkpoint as ckpt
from helpers.checkpoint import (
    CheckpointError,
    checkpoint_summary,
    load_checkpoint,
    load_weights,
    load_whole_model,
    outputs_equal,
    save_checkpoint,
    save_weights,
)
from helpers.models import TinyResNet

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _data_parallel(module):
    """``nn.DataParallel``, keeping the module on the CPU (one visible GPU would move it)."""
    wrapped = nn.DataParallel(module)  # without GPUs it simply calls the module
    module.cpu()
    return wrapped


def _net(num_classes=10, seed=0):
    torch.manual_seed(seed)
    return TinyResNet(num_classes, width=8, depth=1, dropout=0.1)


def _x(n=6, seed=1):
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _state_equal(a, b):
    """Exact equality of nested dicts/lists/tuples of tensors and plain values."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_state_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _trained(steps=2):
    """A model, AdamW and StepLR after a few real steps, so every state is non-trivial."""
    model = _net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    X, y = _x(16), torch.arange(16) % 10
    for _ in range(steps):
        loss = F.cross_entropy(model(X), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def _fresh():
    model = _net(seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def _files(directory):
    return sorted(p.name for p in Path(directory).iterdir())


# --- weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["w.pt", "w.pth", "w.safetensors"])
def test_weights_round_trip_through_a_wrapper(tmp_path, name):
    model, _, _ = _trained()
    path = save_weights(_data_parallel(model), tmp_path / name)
    assert path == tmp_path / name and _files(tmp_path) == [name]
    fresh = _net(seed=1)
    assert not outputs_equal(model, fresh, _x())
    report = load_weights(fresh, path)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert outputs_equal(model, fresh, _x())
    if name.endswith(".safetensors"):
        keys = list(safetensors.torch.load_file(path))
    else:
        keys = list(torch.load(path, weights_only=True))
    assert sorted(keys) == sorted(model.state_dict())


class TiedLM(nn.Module):
    """An embedding and an output head that share one weight matrix (weight tying)."""

    def __init__(self, vocab=20, dim=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.embed(tokens))))


def test_safetensors_round_trip_with_tied_weights(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    with pytest.raises(RuntimeError, match="share memory"):  # why tied weights need care
        safetensors.torch.save_file(model.state_dict(), tmp_path / "plain.safetensors")
    path = save_weights(model, tmp_path / "tied.safetensors")
    stored = safetensors.torch.load_file(path)
    assert len(stored) == len(model.state_dict()) - 1  # the shared matrix is stored once
    torch.manual_seed(1)
    fresh = TiedLM()
    assert load_weights(fresh, path).missing_keys == []
    assert fresh.head.weight is fresh.embed.weight  # the tie survives the load
    tokens = torch.arange(12).reshape(3, 4)
    assert outputs_equal(model, fresh, tokens)


def test_loads_safetensors_written_by_save_model(tmp_path):
    torch.manual_seed(0)
    model = TiedLM()
    safetensors.torch.save_model(model, tmp_path / "hf.safetensors")
    torch.manual_seed(1)
    fresh = TiedLM()
    load_weights(fresh, tmp_path / "hf.safetensors")
    assert outputs_equal(model, fresh, torch.arange(8).reshape(2, 4))


def test_safetensors_is_recognised_without_its_suffix(tmp_path):
    model = _net()
    save_weights(model, tmp_path / "w.safetensors")
    os.replace(tmp_path / "w.safetensors", tmp_path / "weights.bin")
    fresh = _net(seed=1)
    load_weights(fresh, tmp_path / "weights.bin")
    assert outputs_equal(model, fresh, _x())


@pytest.mark.parametrize("key", ["model", "model_state_dict", "state_dict"])
def test_load_weights_finds_weights_inside_checkpoint_dicts(tmp_path, key):
    model = _net()
    torch.save({"epoch": 3, key: _data_parallel(model).state_dict(), "note": "x"},
               tmp_path / "c.pt")
    fresh = _net(seed=1)
    load_weights(fresh, tmp_path / "c.pt")
    assert outputs_equal(model, fresh, _x())


def test_legacy_torch_save_format_loads_without_mmap(tmp_path):
    model = _net()
    torch.save(model.state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(RuntimeError, match="mmap"):  # what a blind mmap=True would do
        torch.load(tmp_path / "old.pt", weights_only=True, mmap=True)
    fresh = _net(seed=1)
    load_weights(fresh, tmp_path / "old.pt")
    assert outputs_equal(model, fresh, _x())


def test_compiled_model_weights_load_into_a_plain_model(tmp_path):
    model = _net()
    compiled = torch.compile(model)  # never called, so nothing is compiled
    torch.save(compiled.state_dict(), tmp_path / "compiled.pt")
    assert all(k.startswith("_orig_mod.") for k in torch.load(tmp_path / "compiled.pt"))
    fresh = _net(seed=1)
    load_weights(fresh, tmp_path / "compiled.pt")
    assert outputs_equal(model, fresh, _x())
    save_weights(compiled, tmp_path / "plain.pt")
    assert list(torch.load(tmp_path / "plain.pt", weights_only=True)) == list(model.state_dict())


def test_load_weights_into_a_wrapped_model(tmp_path):
    model = _net()
    save_weights(model, tmp_path / "w.pt")
    fresh = _net(seed=1)
    load_weights(_data_parallel(fresh), tmp_path / "w.pt")
    assert outputs_equal(model, fresh, _x())


def test_a_model_whose_own_submodule_is_called_module_keeps_its_keys(tmp_path):
    average = torch.optim.swa_utils.AveragedModel(_net())
    average.update_parameters(_net(seed=1))
    path = save_weights(average, tmp_path / "swa.pt")
    assert all(k.startswith("module.") or k == "n_averaged" for k in torch.load(path))
    fresh = torch.optim.swa_utils.AveragedModel(_net(seed=2))
    assert load_weights(fresh, path).missing_keys == []
    assert outputs_equal(average, fresh, _x())


def test_class_count_mismatch_names_key_shapes_and_fix(tmp_path):
    path = save_weights(_net(10), tmp_path / "ten.pt")
    five = _net(5)
    expected = (
        f"{path}: 2 tensor(s) have a different shape than in the model:\n"
        f"  fc.weight: checkpoint [10, {five.fc.in_features}] vs model "
        f"{list(five.fc.weight.shape)}\n"
        f"  fc.bias: checkpoint [10] vs model [5]\n"
        "The checkpoint comes from a model built differently (another class count?). Either build "
        "the model as it was saved, load, then replace that layer (the head), or load everything "
        "else with load_weights(model, path, strict=False, exclude=['fc']).")
    for strict in (True, False):
        with pytest.raises(CheckpointError) as info:
            load_weights(five, path, strict=strict)
        assert str(info.value) == expected


def test_the_suggested_fix_loads_everything_but_the_head(tmp_path):
    ten = _net(10)
    path = save_weights(ten, tmp_path / "ten.pt")
    five = _net(5, seed=1)
    head_before = five.fc.weight.detach().clone()
    report = load_weights(five, path, strict=False, exclude=["fc"])
    assert report.missing_keys == ["fc.weight", "fc.bias"] and report.unexpected_keys == []
    assert torch.equal(five.fc.weight, head_before)
    assert torch.equal(five.forward_features(_x()), ten.forward_features(_x()))


def test_key_mismatch_is_a_short_error_unless_strict_is_false(tmp_path):
    path = save_weights(_net(), tmp_path / "w.pt")
    bigger = TinyResNet(10, width=8, depth=2)
    with pytest.raises(CheckpointError) as info:
        load_weights(bigger, path)
    message = str(info.value)
    assert str(path) in message and "missing from the file: blocks.1." in message
    assert "strict=False" in message
    report = load_weights(bigger, path, strict=False)
    assert report.missing_keys and all(k.startswith("blocks.1.") for k in report.missing_keys)
    assert report.unexpected_keys == []


# --- training checkpoints -------------------------------------------------------------------------


def test_checkpoint_round_trip_restores_every_state(tmp_path):
    model, optimizer, scheduler = _trained()
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))  # creates the scale tensor
    scaler.update(new_scale=1024.0)
    extras = {"best_acc": 0.75, "class_names": ["0", "1"], "config": {"lr": 0.01, "depth": 1},
              "history": {"val_acc": [0.5, 0.75]}}
    save_checkpoint(tmp_path / "c.pt", model=_data_parallel(model), optimizer=optimizer,
                    scheduler=scheduler, scaler=scaler, epoch=4, **extras)
    fresh_model, fresh_opt, fresh_sched = _fresh()
    fresh_scaler = torch.amp.GradScaler("cpu")
    info = load_checkpoint(tmp_path / "c.pt", model=fresh_model, optimizer=fresh_opt,
                           scheduler=fresh_sched, scaler=fresh_scaler)
    assert info == {"epoch": 4, "start_epoch": 5, **extras}
    assert _state_equal(fresh_model.state_dict(), model.state_dict())
    assert _state_equal(fresh_opt.state_dict(), optimizer.state_dict())
    assert fresh_sched.state_dict() == scheduler.state_dict()
    assert fresh_scaler.state_dict() == scaler.state_dict()
    assert fresh_scaler.get_scale() == 1024.0


def test_checkpoint_loads_with_plain_torch_load_weights_only(tmp_path):
    model, optimizer, scheduler = _trained()
    save_checkpoint(tmp_path / "c.pt", model=torch.compile(model), optimizer=optimizer,
                    scheduler=scheduler, epoch=0, names=("a", "b"), best=None, counts={1, 2})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert raw["format"] == ckpt.FORMAT and raw["epoch"] == 0
    assert list(raw["model"]) == list(model.state_dict())  # no _orig_mod. prefix
    assert set(raw["rng"]) >= {"python", "numpy", "torch"}
    assert raw["names"] == ("a", "b") and raw["best"] is None and raw["counts"] == {1, 2}


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(3).tolist(), torch.randn(2).tolist()


def test_rng_states_come_back(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draws()  # move away from the seeded positions; also exercises the Gaussian caches
    np.random.standard_normal()
    save_checkpoint(tmp_path / "c.pt", model=_net(), epoch=0)
    expected = _draws()
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    load_checkpoint(tmp_path / "c.pt", model=_net(), restore_rng=False)
    assert _draws() != expected
    load_checkpoint(tmp_path / "c.pt", model=_net())
    assert _draws() == expected


class Config:
    lr = 0.1


@pytest.mark.parametrize("value, found", [
    (lambda: 1, "cannot be pickled"),
    (np.float64(0.5), "refuses numpy"),
    (np.arange(3), "refuses numpy"),
    (Path("runs"), "refuses pathlib"),
    (Config(), "refuses test_checkpoint.Config"),
    ({"nested": [1, Config()]}, "refuses test_checkpoint.Config"),
])
def test_unsafe_extras_are_refused_before_touching_the_file(tmp_path, value, found):
    path = save_checkpoint(tmp_path / "c.pt", model=_net(), epoch=1)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(path, model=_net(), epoch=2, best_acc=0.5, extra_thing=value)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot store extra_thing = ")
    assert found in message and "float(x)" in message and "Nothing was written" in message
    assert path.read_bytes() == before and _files(tmp_path) == ["c.pt"]


def test_reserved_names_and_bad_epochs_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="'rng' is a reserved checkpoint key"):
        save_checkpoint(tmp_path / "c.pt", model=_net(), epoch=1, rng=0)
    with pytest.raises(CheckpointError, match="epoch must be an int"):
        save_checkpoint(tmp_path / "c.pt", model=_net(), epoch=np.int64(1))
    assert _files(tmp_path) == []


def test_load_checkpoint_explains_missing_parts(tmp_path):
    save_checkpoint(tmp_path / "c.pt", model=_net(), epoch=1)
    model, optimizer, _ = _fresh()
    with pytest.raises(CheckpointError, match="it holds no optimizer state"):
        load_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer)
    save_weights(_net(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "w.pt", model=model)
    assert "not a training checkpoint" in str(info.value) and "load_weights" in str(info.value)


def test_optimizer_for_other_parameters_is_a_clear_error(tmp_path):
    model, optimizer, _ = _trained()
    save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer, epoch=1)
    fresh = _net()
    only_head = torch.optim.AdamW(fresh.fc.parameters())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "c.pt", model=fresh, optimizer=only_head)
    assert "the optimizer state does not fit" in str(info.value)
    assert "same parameters in the same order" in str(info.value)


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", model=_net(), epoch=1)
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if hasattr(f, "name") and ".tmp-" in str(f.name):  # the real file, not the safety check
            f.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="the disk is full"):
        save_checkpoint(path, model=_net(), epoch=2)
    assert path.read_bytes() == before and _files(tmp_path) == ["c.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path, model=_net())["epoch"] == 1


def test_saving_onto_a_folder_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="this is a folder"):
        save_weights(_net(), tmp_path)


# --- unreadable and unsafe files --------------------------------------------------------------


LOADERS = {
    "load_weights": lambda p: load_weights(_net(), p),
    "load_checkpoint": lambda p: load_checkpoint(p, model=_net()),
    "load_whole_model": lambda p: load_whole_model(p),
    "checkpoint_summary": checkpoint_summary,
}


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_file_names_the_path_and_what_to_do(tmp_path, loader):
    path = tmp_path / "nope" / "last.pt"
    with pytest.raises(CheckpointError, match="no such checkpoint file") as info:  # issue 19: not OSError
        LOADERS[loader](path)
    assert str(path) in str(info.value) and "train and save first" in str(info.value)


def _corrupt_files(directory):
    """name -> path of files that no loader can read."""
    directory.mkdir()
    files = {}
    checkpoint = save_checkpoint(directory / "good.pt", model=_net(), epoch=1)
    legacy = directory / "legacy.pt"
    torch.save(_net().state_dict(), legacy, _use_new_zipfile_serialization=False)
    tensors = save_weights(_net(), directory / "good.safetensors")
    for source in (checkpoint, legacy, tensors):
        data = source.read_bytes()
        for cut in (1, 64, len(data) // 2, len(data) - 1):
            target = directory / f"cut{cut}-{source.name}"
            target.write_bytes(data[:cut])
            files[target.name] = target
    files["random.pt"] = directory / "random.pt"
    files["random.pt"].write_bytes(random.Random(0).randbytes(4096))
    files["empty.pt"] = directory / "empty.pt"
    files["empty.pt"].touch()
    files["metrics.json"] = directory / "metrics.json"
    files["metrics.json"].write_text('{"val_acc": [0.5, 0.9]}\n')
    files["foreign.zip"] = directory / "foreign.zip"
    with zipfile.ZipFile(files["foreign.zip"], "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    files["empty.zip"] = directory / "empty.zip"
    zipfile.ZipFile(files["empty.zip"], "w").close()
    return files


@pytest.fixture(scope="module")
def corrupt_files(tmp_path_factory):
    return _corrupt_files(tmp_path_factory.mktemp("corrupt") / "files")


def test_there_are_truncated_files_of_every_kind(corrupt_files):
    assert sum(name.startswith("cut") for name in corrupt_files) == 12


@pytest.mark.parametrize("loader", ["load_weights", "load_checkpoint", "checkpoint_summary"])
def test_corrupt_files_raise_checkpoint_error_with_path_and_advice(corrupt_files, loader):
    for path in corrupt_files.values():
        with pytest.raises(CheckpointError) as info:
            LOADERS[loader](path)
        error = info.value
        assert str(error).startswith(f"{path}: ") and error.path == path
        assert error.advice and str(error).endswith(error.advice)
        assert "Traceback" not in str(error) and len(str(error)) < 800
        # no chained unpickling traceback for the learner
        assert error.__cause__ is None
        assert error.__context__ is None or error.__suppress_context__


def test_corrupt_file_messages_say_what_the_file_is(corrupt_files):
    def message(name):
        with pytest.raises(CheckpointError) as info:
            load_weights(_net(), corrupt_files[name])
        return str(info.value)

    assert "the file is empty (0 bytes)" in message("empty.pt")
    assert "JSON or text file" in message("metrics.json")
    assert "not one written by torch.save" in message("foreign.zip")
    for name in ("cut64-good.pt", "cut1-legacy.pt", "cut64-legacy.pt", "random.pt"):
        assert "damaged" in message(name) and "earlier checkpoint" in message(name)
    assert "safetensors" in message("cut64-good.safetensors")


class Payload:
    """Unpickling this creates a file: a stand-in for any code an attacker wants to run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_malicious_payload_is_live(tmp_path):
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()  # so its absence below means the loaders refused to run it


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
@pytest.mark.parametrize("loader", LOADERS)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer, loader):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"model": OrderedDict(fc=torch.zeros(2)), "epoch": 1, "x": Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError) as info:
        LOADERS[loader](path)
    assert not marker.exists()
    message = str(info.value)
    assert str(path) in message and "can run arbitrary code" in message
    assert "trusted=True" in message


def test_whole_model_pickle_is_refused_with_an_explanation_then_loads_when_trusted(tmp_path):
    model = _net()
    torch.save(model, tmp_path / "whole.pt")
    for load in (lambda: load_weights(_net(seed=1), tmp_path / "whole.pt"),
                 lambda: load_whole_model(tmp_path / "whole.pt")):
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert "helpers.models.TinyResNet" in message and "weights_only=True" in message
        assert "torch.save(model)" in message and "load_whole_model(path, trusted=True)" in message
    whole = load_whole_model(tmp_path / "whole.pt", trusted=True)
    assert type(whole) is TinyResNet and outputs_equal(model, whole, _x())
    fresh = _net(seed=1)
    load_weights(fresh, tmp_path / "whole.pt", trusted=True)
    assert outputs_equal(model, fresh, _x())


def test_load_whole_model_on_a_weights_file_points_to_load_weights(tmp_path):
    save_weights(_net(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"(?s)holds weights \(a state_dict\).*load_weights"):
        load_whole_model(tmp_path / "w.pt")


# --- summaries and comparisons ------------------------------------------------------------


def _count_tensors(obj):
    if isinstance(obj, torch.Tensor):
        return 1
    if isinstance(obj, dict):
        return sum(_count_tensors(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_count_tensors(v) for v in obj)
    return 0


def test_checkpoint_summary_describes_a_checkpoint(tmp_path):
    model, optimizer, scheduler = _trained()
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer,
                           scheduler=scheduler, epoch=6, best_acc=0.93, class_names=["0", "1"])
    raw = torch.load(path, weights_only=True)
    summary = checkpoint_summary(path)
    lines = summary.splitlines()
    assert lines[0].startswith(f"c.pt: training checkpoint ({ckpt.FORMAT}), ")
    assert "epochs done: 7, next epoch: 8" in lines  # epoch=6 is fit's 0-based index
    assert "scheduler: stepped 2 times (its last_epoch)" in lines  # scheduler.step() calls
    assert f"model: {len(raw['model'])} tensors" in summary
    assert f"optimizer: state for {len(raw['optimizer']['state'])} parameters" in summary
    assert "extras: best_acc=≈0.93, class_names=['0', '1']" in lines  # a measurement: marked
    assert f"tensors in file: {_count_tensors(raw)}," in summary
    kib = path.stat().st_size / 1024
    assert f"≈{kib:.1f} KiB on disk" in lines[0]  # marked: torch versions lay the zip out differently


def test_checkpoint_summary_describes_plain_weights(tmp_path):
    model = _net()
    path = save_weights(_data_parallel(model), tmp_path / "w.safetensors")
    summary = checkpoint_summary(path)
    assert summary.startswith("w.safetensors: weights (a state_dict)")
    assert f"tensors: {len(model.state_dict())}, " in summary and "(safetensors)" in summary


def test_outputs_equal_compares_exactly_and_restores_modes():
    a, b = _net(), _net()
    a.train()
    b.eval()
    b.blocks.train()
    modes = [m.training for m in (*a.modules(), *b.modules())]
    assert outputs_equal(a, b, _x())
    assert [m.training for m in (*a.modules(), *b.modules())] == modes
    with torch.no_grad():
        b.fc.bias[0] += 1e-6
    assert not outputs_equal(a, b, _x())


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 4)

    def forward(self, x):
        h = self.body(x)
        return h, {"sum": h.sum(1), "max": h.amax(1)}


def test_outputs_equal_handles_tuple_and_dict_outputs():
    torch.manual_seed(0)
    a = TwoHeads()
    b = TwoHeads()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4)
    assert outputs_equal(a, b, x)
    with torch.no_grad():
        b.body.bias[1] += 0.5
    assert not outputs_equal(a, b, x)


# --- CUDA ----------------------------------------------------------------------------------------


def _amp_step(model, optimizer, scaler, device):
    X, y = _x(16).to(device), (torch.arange(16) % 10).to(device)
    with torch.autocast(device_type=device.type, dtype=torch.float16 if device.type == "cuda"
                        else torch.bfloat16):
        loss = F.cross_entropy(model(X), y)
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


@cuda
@pytest.mark.cuda
def test_save_on_cuda_load_on_cpu_with_grad_scaler(tmp_path):
    device = torch.device("cuda")
    model = _net().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10)
    _amp_step(model, optimizer, scaler, device)
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer, scaler=scaler,
                           epoch=0)
    cpu_model = _net(seed=1)
    cpu_opt = torch.optim.AdamW(cpu_model.parameters(), lr=1e-3)
    cpu_scaler = torch.amp.GradScaler("cpu")
    load_checkpoint(path, model=cpu_model, optimizer=cpu_opt, scaler=cpu_scaler)
    assert cpu_scaler.get_scale() == scaler.get_scale()
    assert _state_equal(cpu_model.state_dict(), model.state_dict())
    assert all(v.device.type == "cpu" for s in cpu_opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))
    assert _state_equal(cpu_opt.state_dict(), optimizer.state_dict())


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("map_location", ["cpu", "cuda"])
def test_save_on_cpu_load_into_a_cuda_model(tmp_path, map_location):
    model, optimizer, _ = _trained()
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))
    scaler.update(new_scale=512.0)
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer, scaler=scaler,
                           epoch=2)
    device = torch.device("cuda")
    gpu_model = _net(seed=1).to(device)
    gpu_opt = torch.optim.AdamW(gpu_model.parameters(), lr=1e-2)
    gpu_scaler = torch.amp.GradScaler("cuda")
    load_checkpoint(path, model=gpu_model, optimizer=gpu_opt, scaler=gpu_scaler,
                    map_location=map_location)
    assert gpu_scaler.get_scale() == 512.0
    assert next(gpu_model.parameters()).device.type == "cuda"
    assert _state_equal(gpu_model.state_dict(), model.state_dict())
    states = [v for s in gpu_opt.state.values() for v in s.values()
              if isinstance(v, torch.Tensor) and v.dim() > 0]
    assert states and all(v.device.type == "cuda" for v in states)
    _amp_step(gpu_model, gpu_opt, gpu_scaler, device)  # training continues on the GPU
    weights = save_weights(model, tmp_path / "w.safetensors")
    fresh = _net(seed=2).to(device)
    load_weights(fresh, weights, map_location=map_location)
    assert _state_equal(fresh.state_dict(), model.state_dict())  # kernels differ, weights do not


def test_state_dicts_equal_is_bit_exact():
    from helpers.checkpoint import state_dicts_equal

    a = nn.Linear(3, 2).state_dict()
    b = {k: v.clone() for k, v in a.items()}
    assert state_dicts_equal(a, b)
    b["bias"][0] += 1e-7
    assert not state_dicts_equal(a, b)
    assert not state_dicts_equal(a, {"weight": a["weight"]})
