import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from helpers.data import (
    DatasetUnavailableError,
    Split,
    load_digits,
    load_torchvision_dataset,
    make_loader,
    set_epoch,
)
from helpers.settings import SettingsError


def test_digits_split_is_complete_disjoint_and_real():
    data = load_digits(10)
    sizes = len(data.train), len(data.val), len(data.test)
    assert sum(sizes) == 1797  # every bundled image is used exactly once
    assert data.image_shape == (1, 8, 8)
    assert data.class_names == [str(i) for i in range(10)]
    # train set is standardised with its own statistics
    assert abs(float(data.train.X.mean())) < 1e-5
    assert abs(float(data.train.X.std()) - 1) < 1e-4
    # each split holds every class, roughly 70/15/15
    for split in (data.train, data.val, data.test):
        assert set(split.y.tolist()) == set(range(10))
    assert 0.68 < len(data.train) / 1797 < 0.72


def test_split_is_deterministic_and_nested_across_class_counts():
    a, b = load_digits(10), load_digits(10)
    assert torch.equal(a.test.X, b.test.X) and torch.equal(a.test.y, b.test.y)
    five = load_digits(5)
    assert set(five.train.y.tolist()) == set(range(5))
    # the raw images of the 5-class test split are exactly the 10-class test images of digits 0..4
    keep = a.test.y < 5
    raw10 = a.test.X[keep] * a.extra["std"] + a.extra["mean"]
    raw5 = five.test.X * five.extra["std"] + five.extra["mean"]
    assert torch.allclose(raw10, raw5, atol=1e-5)


def test_another_seed_gives_another_split():
    assert not torch.equal(load_digits(10, seed=0).test.y, load_digits(10, seed=1).test.y)


def test_resize_to_three_channels():
    data = load_digits(3, size=32, channels=3)
    assert data.image_shape == (3, 32, 32)
    assert torch.equal(data.train.X[:, 0], data.train.X[:, 2])


@pytest.mark.parametrize("kwargs,message", [
    ({"num_classes": 11}, "must be an integer from 2 to 10"),
    ({"channels": 2}, "channels must be 1 or 3"),
    ({"size": 4}, "size must be an integer >= 8"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, SettingsError), match=message):
        load_digits(**kwargs)


def test_split_is_a_dataset_indexed_by_sample_or_batch():
    split = load_digits(10).train
    assert isinstance(split, Dataset)
    X, y = split[3]
    assert X.shape == (1, 8, 8) and y.ndim == 0 and int(y) == int(split.y[3])
    X, y = split[[5, 1, 5]]
    assert torch.equal(X, split.X[[5, 1, 5]]) and y.tolist() == split.y[[5, 1, 5]].tolist()


def test_loader_is_a_torch_dataloader_and_covers_the_split_once_per_epoch():
    data = load_digits(10)
    loader = make_loader(data.train, 100, shuffle=True)
    assert isinstance(loader, DataLoader)
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == -(-len(data.train) // 100)
    assert sorted(seen.tolist()) == sorted(data.train.y.tolist())
    assert not torch.equal(seen, data.train.y)  # shuffled


def test_loader_reads_one_index_per_batch_not_one_per_sample(monkeypatch):
    split = load_digits(3).train
    calls = []
    original = Split.__getitem__
    monkeypatch.setattr(Split, "__getitem__", lambda self, i: calls.append(i) or original(self, i))
    batches = list(make_loader(split, 32))
    assert len(calls) == len(batches) == -(-len(split) // 32)
    assert torch.equal(torch.cat([X for X, _ in batches]), split.X)  # in order without shuffle


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), batch=st.integers(1, 64), drop_last=st.booleans(),
       order=st.sampled_from(["sequential", "shuffle", "seed"]))
def test_loader_lengths(n, batch, drop_last, order):
    split = Split(torch.arange(n).float().view(n, 1), torch.arange(n))
    kwargs = {"shuffle": {"shuffle": True}, "seed": {"seed": 7}, "sequential": {}}[order]
    loader = make_loader(split, batch, drop_last=drop_last, **kwargs)
    batches = list(loader)
    assert len(batches) == len(loader)
    ys = torch.cat([y for _, y in batches]) if batches else torch.empty(0, dtype=torch.long)
    assert len(ys) == (n - n % batch if drop_last else n)
    assert len(set(ys.tolist())) == len(ys)  # no sample twice
    for X, y in batches:
        assert torch.equal(X.view(-1).long(), y)  # images stay paired with their labels


def test_shuffle_follows_torch_global_rng():
    data = load_digits(10)
    torch.manual_seed(123)
    first = torch.cat([y for _, y in make_loader(data.train, 64, shuffle=True)])
    torch.manual_seed(123)
    again = torch.cat([y for _, y in make_loader(data.train, 64, shuffle=True)])
    torch.manual_seed(124)
    other = torch.cat([y for _, y in make_loader(data.train, 64, shuffle=True)])
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_a_seeded_generator_gives_the_same_order_whatever_the_global_rng():
    data = load_digits(10)
    orders = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        loader = make_loader(data.train, 64, shuffle=True, generator=torch.Generator().manual_seed(5))
        orders.append(torch.cat([y for _, y in loader]))
    assert torch.equal(*orders)


def test_seeded_order_depends_only_on_seed_and_epoch():
    """What makes a resumed run see the same batches without any saved random state."""
    split = Split(torch.arange(200).float().view(200, 1), torch.arange(200))

    def order(epoch, seed=0):
        loader = make_loader(split, 16, seed=seed)
        torch.manual_seed(epoch * 1000 + 17)  # the global RNG plays no part
        assert set_epoch(loader, epoch)
        return torch.cat([y for _, y in loader])

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))
    assert not torch.equal(order(3), order(3, seed=1))
    # the same formula as DistributedSampler: randperm from a generator seeded with seed + epoch
    assert order(3).tolist() == torch.randperm(200, generator=torch.Generator().manual_seed(3)).tolist()


def test_distributed_sampler_shards_and_set_epoch_reaches_it():
    data = load_digits(10)
    parts = {}
    for epoch in (0, 1):
        for rank in range(2):
            sampler = DistributedSampler(data.train, num_replicas=2, rank=rank, seed=0)
            loader = make_loader(data.train, 50, sampler=sampler)
            assert set_epoch(loader, epoch) and sampler.epoch == epoch
            parts[epoch, rank] = torch.cat([y for _, y in loader])
    half = -(-len(data.train) // 2)
    assert all(len(p) == half for p in parts.values())
    assert not torch.equal(parts[0, 0], parts[1, 0])  # set_epoch reshuffles


def test_set_epoch_leaves_plain_iterables_alone():
    assert set_epoch([(torch.zeros(1), torch.zeros(1))], 3) is False
    assert set_epoch(make_loader(load_digits(2).train, 8), 3) is False


@pytest.mark.parametrize("kwargs,message", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": True}, "batch_size must be a positive integer"),
    ({"sampler": [0, 1], "shuffle": True}, "either sampler=... or shuffle/seed/generator"),
    ({"seed": 1, "generator": torch.Generator()}, "seed=.*or generator=..., not both"),
])
def test_loader_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_loader(load_digits(2).train, **kwargs)


def test_torchvision_sets_are_opt_in_and_explain_when_missing(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_torchvision_dataset("fashionmnist", tmp_path, download=False)
    message = str(info.value)
    assert "download=False" in message and "load_digits()" in message


def test_torchvision_download_failure_is_explained(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    with pytest.raises(DatasetUnavailableError, match=r"download failed \(is this machine offline\?\)"):
        load_torchvision_dataset("cifar10", tmp_path, download=True)


def test_unknown_torchvision_set():
    with pytest.raises(ValueError, match="unknown data set 'mnist2'"):
        load_torchvision_dataset("mnist2")
