import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.data import BatchLoader, DatasetUnavailableError, load_digits, load_torchvision_dataset
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


def test_batches_cover_the_split_once_per_epoch():
    data = load_digits(10)
    loader = BatchLoader(data.train, 100, shuffle=True)
    seen = torch.cat([y for _, y in loader])
    assert len(loader) == -(-len(data.train) // 100)
    assert sorted(seen.tolist()) == sorted(data.train.y.tolist())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 300), batch=st.integers(1, 64), drop_last=st.booleans(),
       shuffle=st.booleans())
def test_batch_loader_lengths(n, batch, drop_last, shuffle):
    from helpers.data import Split

    split = Split(torch.arange(n).float().view(n, 1), torch.arange(n))
    loader = BatchLoader(split, batch, shuffle=shuffle, drop_last=drop_last)
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
    first = torch.cat([y for _, y in BatchLoader(data.train, 64, shuffle=True)])
    torch.manual_seed(123)
    again = torch.cat([y for _, y in BatchLoader(data.train, 64, shuffle=True)])
    assert torch.equal(first, again)


def test_sampler_drives_the_indices():
    from torch.utils.data import DistributedSampler

    data = load_digits(10)
    parts = []
    for rank in range(2):
        sampler = DistributedSampler(range(len(data.train)), num_replicas=2, rank=rank, seed=0)
        loader = BatchLoader(data.train, 50, sampler=sampler)
        loader.set_epoch(1)
        parts.append(torch.cat([y for _, y in loader]))
    assert len(parts[0]) == len(parts[1]) == -(-len(data.train) // 2)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        BatchLoader(load_digits(2).train, 0)


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
