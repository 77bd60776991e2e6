"""helpers.distributed and checkpoints of wrapped models: DataParallel, DDP, torchrun."""

import json
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers.checkpoint import load_weights, outputs_equal, save_weights
from helpers.data import load_digits
from helpers.distributed import (
    cleanup_distributed,
    free_port,
    is_main_process,
    run_ddp_demo,
    save_on_main,
    setup_distributed,
)
from helpers.models import TinyResNet
from helpers.seeding import seed_everything

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _data_parallel(module):
    """``nn.DataParallel``, keeping the module on the CPU (one visible GPU would move it)."""
    wrapped = nn.DataParallel(module)  # without GPUs it simply calls the module
    module.cpu()
    return wrapped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_free_port_can_be_bound():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_a_plain_process_is_the_main_process(tmp_path, monkeypatch):
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device) == (0, 1, None, torch.device("cpu"))
    assert ctx.is_main and is_main_process()
    model = nn.Linear(3, 2)
    assert save_on_main(tmp_path / "w.pt", model=model)
    assert list(torch.load(tmp_path / "w.pt", weights_only=True)) == ["weight", "bias"]
    assert save_on_main(tmp_path / "c.pt", model=model, epoch=2, best=0.5)
    assert torch.load(tmp_path / "c.pt", weights_only=True)["best"] == 0.5
    with pytest.raises(TypeError, match="without epoch"):
        save_on_main(tmp_path / "x.pt", model=model, best=0.5)
    cleanup_distributed()  # nothing to clean up; must not fail


def test_torchrun_variables_without_a_master_address_are_explained(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="MASTER_ADDR, MASTER_PORT is not; start the script"):
        setup_distributed("cpu")


def test_ddp_demo_rejects_impossible_settings(tmp_path):
    with pytest.raises(ValueError, match="world_size must be a positive integer"):
        run_ddp_demo(0, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="backend must be 'gloo'"):
        run_ddp_demo(1, backend="mpi", checkpoint_dir=tmp_path)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"one GPU per process: world_size={gpus + 1}"):
        run_ddp_demo(gpus + 1, backend="nccl", checkpoint_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_dataparallel_checkpoint_loads_into_a_plain_model(tmp_path):
    seed_everything(0)
    model = TinyResNet(10, width=8, depth=1)
    wrapped = _data_parallel(model)
    x = load_digits(10).val.X[:16]
    torch.save(wrapped.state_dict(), tmp_path / "dp_state_dict.pt")
    save_weights(wrapped, tmp_path / "dp_weights.pt")
    raw = torch.load(tmp_path / "dp_state_dict.pt", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    with pytest.raises(RuntimeError, match="Missing key"):  # the classic failure
        TinyResNet(10, width=8, depth=1).load_state_dict(raw)
    from_wrapped, from_plain = TinyResNet(10, width=8, depth=1), TinyResNet(10, width=8, depth=1)
    load_weights(from_wrapped, tmp_path / "dp_state_dict.pt")
    load_weights(from_plain, tmp_path / "dp_weights.pt")
    assert outputs_equal(from_wrapped, from_plain, x) and outputs_equal(model, from_wrapped, x)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ddp")
    return run_ddp_demo(2, backend="gloo", checkpoint_dir=directory, steps=5, seed=0)


@pytest.mark.slow
def test_ddp_checkpoint_over_gloo_loads_into_a_plain_model(ddp_run):
    assert (ddp_run["world_size"], ddp_run["backend"], ddp_run["steps"]) == (2, "gloo", 5)
    wrapped = torch.load(ddp_run["wrapped_path"], weights_only=True)
    plain = torch.load(ddp_run["weights_path"], weights_only=True)
    assert all(k.startswith("module.") for k in wrapped)
    assert list(wrapped) == ["module." + k for k in plain]
    assert ddp_run["wrapped_keys"] == list(wrapped)[:3]
    assert ddp_run["weights_keys"] == list(plain)[:3]

    kwargs = ddp_run["model_kwargs"]
    from_wrapped, from_plain = TinyResNet(**kwargs), TinyResNet(**kwargs)
    load_weights(from_wrapped, ddp_run["wrapped_path"])
    load_weights(from_plain, ddp_run["weights_path"])
    x = load_digits(kwargs["num_classes"]).val.X[:32]
    assert outputs_equal(from_wrapped, from_plain, x)
    seed_everything(ddp_run["seed"], deterministic=False)
    initial = TinyResNet(**kwargs)  # what every rank started from
    assert not outputs_equal(initial, from_plain, x)  # so the ranks really trained


@pytest.mark.slow
def test_ddp_ranks_see_disjoint_shards_and_stay_in_sync(ddp_run):
    ranks = ddp_run["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    n = len(load_digits(10).train)
    per_rank = -(-n // 2)  # DistributedSampler pads by repeating indices so every rank gets as many
    assert [len(r["shard_epoch0"]) for r in ranks] == [per_rank, per_rank]
    shards = [set(r["shard_epoch0"]) for r in ranks]
    assert len(shards[0] & shards[1]) <= 2 * per_rank - n  # only the padding is shared
    assert shards[0] | shards[1] == set(range(n))
    assert ddp_run["in_sync"]  # gradients were averaged, so the parameters agree bit for bit


@pytest.mark.slow
def test_ddp_demo_leaves_no_process_behind(ddp_run):
    assert multiprocessing.active_children() == []
    assert len(ddp_run["pids"]) == 2 and not any(_alive(pid) for pid in ddp_run["pids"])


@pytest.mark.slow
def test_setup_distributed_and_save_on_main_under_torchrun(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")  # two CPU ranks on gloo
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(ROOT / "tests" / "scripts" / "torchrun_probe.py"), str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, report in enumerate(reports):
        assert (report["rank"], report["local_rank"], report["world_size"]) == (rank, rank, 2)
        assert (report["backend"], report["device"]) == ("gloo", "cpu")
        assert report["is_main"] is report["ctx_is_main"] is (rank == 0)
        assert report["wrote"] is (rank == 0)
        assert report["exists_after_barrier"] and report["weights_equal_across_ranks"]
        assert report["initialized_after_cleanup"] is False
    assert list(torch.load(tmp_path / "weights.pt", weights_only=True)) == ["weight", "bias"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ddp_demo_over_nccl_with_one_process(tmp_path):
    result = run_ddp_demo(1, backend="nccl", checkpoint_dir=tmp_path, steps=3)
    assert result["backend"] == "nccl" and result["ranks"][0]["device"] == "cuda:0"
    model = TinyResNet(**result["model_kwargs"]).cuda()
    load_weights(model, result["wrapped_path"], map_location="cuda")
    reference = TinyResNet(**result["model_kwargs"])
    load_weights(reference, result["weights_path"])
    mine, theirs = model.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].cpu(), theirs[k]) for k in mine)
    assert multiprocessing.active_children() == []
