"""Real data with no download: scikit-learn's bundled handwritten digits, as tensors on a device.

>>> data = load_digits(num_classes=10)
>>> data.train.X.shape, data.num_classes
(torch.Size([1254, 1, 8, 8]), 10)

``size=32, channels=3`` gives ResNet-style 3x32x32 images. ``BatchLoader`` slices preloaded tensors,
so an epoch does no per-sample Python work. FashionMNIST and CIFAR-10 are an explicit, online opt-in
(``load_torchvision_dataset``); nothing here downloads by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from helpers.settings import parse_num_classes


@dataclass
class Split:
    """Images ``X`` (N, C, H, W) and integer labels ``y`` (N,) on one device."""

    X: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.X.to(device), self.y.to(device))


@dataclass
class ImageData:
    """A train/val/test split of an image classification data set."""

    train: Split
    val: Split
    test: Split
    class_names: list[str]
    name: str = "digits"
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.X.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train.X.device

    def to(self, device: torch.device | str) -> ImageData:
        return ImageData(self.train.to(device), self.val.to(device), self.test.to(device),
                         list(self.class_names), self.name, dict(self.extra))

    def __repr__(self) -> str:
        return (f"ImageData({self.name!r}, classes={self.num_classes}, image_shape={self.image_shape}, "
                f"train={len(self.train)}, val={len(self.val)}, test={len(self.test)}, "
                f"device={self.device})")


def _split_indices(labels: np.ndarray, classes: Iterable[int], seed: int,
                   val_fraction: float, test_fraction: float) -> tuple[np.ndarray, ...]:
    """Stratified split. Each class is shuffled by its own RNG, so a class lands in the same split
    whatever the class count: the 5-class test set is a subset of the 10-class one."""
    parts: tuple[list, list, list] = ([], [], [])
    for c in classes:
        idx = np.flatnonzero(labels == c)
        idx = idx[np.random.default_rng([seed, c]).permutation(len(idx))]
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)


def load_digits(num_classes: int = 10, *, size: int = 8, channels: int = 1,
                device: torch.device | str = "cpu", seed: int = 0,
                val_fraction: float = 0.15, test_fraction: float = 0.15) -> ImageData:
    """The 1,797 bundled 8x8 digits, keeping digits ``0..num_classes-1``, split 70/15/15.

    Pixels are scaled to [0, 1] and standardised with the training set's mean and std. ``size`` resizes
    (bilinear) and ``channels=3`` repeats the grey channel for models that expect RGB.

    >>> load_digits(5, size=32, channels=3).image_shape
    (3, 32, 32)
    """
    from sklearn.datasets import load_digits as sk_load_digits

    num_classes = parse_num_classes(num_classes, source="num_classes")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 (the digits are 8x8), got {size!r}")
    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # (1797, 8, 8), values 0..16 in the file
    labels = bunch.target.astype(np.int64)
    train_idx, val_idx, test_idx = _split_indices(labels, range(num_classes), seed,
                                                  val_fraction, test_fraction)
    X = torch.from_numpy(images).unsqueeze(1)
    mean, std = X[train_idx].mean(), X[train_idx].std()
    X = (X - mean) / std
    if size != 8:
        X = F.interpolate(X, size=(size, size), mode="bilinear", align_corners=False)
    if channels == 3:
        X = X.repeat(1, 3, 1, 1)
    y = torch.from_numpy(labels)
    splits = [Split(X[i].contiguous(), y[i].contiguous()).to(device)
              for i in (train_idx, val_idx, test_idx)]
    return ImageData(*splits, class_names=[str(c) for c in range(num_classes)], name="digits",
                     extra={"mean": float(mean), "std": float(std)})


class BatchLoader:
    """Mini-batches sliced from tensors that already sit on the device.

    Shuffling draws one ``torch.randperm`` per epoch from torch's global CPU RNG (or ``generator``),
    so a checkpoint that stores the RNG state resumes the exact same batch order. A ``sampler``
    (e.g. ``torch.utils.data.DistributedSampler``) supplies the indices instead, for multi-process runs.

    >>> loader = BatchLoader(load_digits().train, batch_size=64, shuffle=True)
    >>> X, y = next(iter(loader)); X.shape
    torch.Size([64, 1, 8, 8])
    """

    def __init__(self, split: Split, batch_size: int = 64, *, shuffle: bool = False,
                 drop_last: bool = False, sampler: Iterable[int] | None = None,
                 generator: torch.Generator | None = None) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.drop_last, self.sampler, self.generator = drop_last, sampler, generator

    def _num_samples(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.split)  # type: ignore[arg-type]

    def __len__(self) -> int:
        n = self._num_samples()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to a ``DistributedSampler`` so each epoch shuffles differently."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        X, y = self.split.X, self.split.y
        if self.sampler is not None:
            order: Tensor | None = torch.as_tensor(list(self.sampler), dtype=torch.long)
        elif self.shuffle:
            order = torch.randperm(len(y), generator=self.generator)
        else:
            order = None
        if order is not None:
            order = order.to(X.device)
        n = self._num_samples()
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if order is None:
                yield X[start:start + self.batch_size], y[start:start + self.batch_size]
            else:
                index = order[start:start + self.batch_size]
                yield X[index], y[index]


class DatasetUnavailableError(RuntimeError):
    """An opt-in data set could not be downloaded or found on disk."""


_TORCHVISION_SETS = {"fashionmnist": "FashionMNIST", "cifar10": "CIFAR10"}


def load_torchvision_dataset(name: str, root: str | Path = "data", *, download: bool = False,
                             num_classes: int = 10, device: torch.device | str = "cpu",
                             seed: int = 0, val_fraction: float = 0.1) -> ImageData:
    """Opt-in: FashionMNIST or CIFAR-10 through torchvision (needs internet the first time).

    ``download=True`` must be asked for explicitly. Offline, or when the files are not under
    ``root``, it raises ``DatasetUnavailableError`` that says what to do instead.
    """
    import torchvision

    key = name.lower().replace("-", "").replace("_", "")
    if key not in _TORCHVISION_SETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(_TORCHVISION_SETS)}")
    num_classes = parse_num_classes(num_classes, source="num_classes")
    cls = getattr(torchvision.datasets, _TORCHVISION_SETS[key])
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; "Dataset not found" a RuntimeError
        hint = ("the download failed (is this machine offline?)" if download else
                f"it is not under {str(root)!r} and download=False")
        raise DatasetUnavailableError(
            f"{cls.__name__} is not available: {hint}. Either run once with download=True on a "
            f"machine with internet access, or use the bundled digits, which need no network: "
            f"helpers.data.load_digits(). ({type(exc).__name__}: {exc})"
        ) from None

    def to_split(ds) -> Split:
        X = torch.as_tensor(np.asarray(ds.data), dtype=torch.float32) / 255.0
        X = X.unsqueeze(1) if X.ndim == 3 else X.permute(0, 3, 1, 2)
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
        keep = y < num_classes
        return Split(X[keep], y[keep])

    full, test_split = to_split(train), to_split(test)
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(full) * val_fraction)
    val_idx, train_idx = order[:n_val], order[n_val:]
    mean, std = full.X[train_idx].mean(), full.X[train_idx].std()
    norm = lambda s: Split((s.X - mean) / std, s.y)  # noqa: E731
    splits = [norm(Split(full.X[train_idx], full.y[train_idx])),
              norm(Split(full.X[val_idx], full.y[val_idx])), norm(test_split)]
    return ImageData(*[s.to(device) for s in splits], class_names=list(train.classes[:num_classes]),
                     name=key, extra={"mean": float(mean), "std": float(std)})
