"""Real data with no download: scikit-learn's bundled handwritten digits, as tensors on a device.

>>> data = load_digits(num_classes=10)
>>> data.train.X.shape, data.num_classes
(torch.Size([1259, 1, 8, 8]), 10)

``size=32, channels=3`` gives ResNet-style 3x32x32 images. A ``Split`` is a
``torch.utils.data.Dataset``; ``make_loader`` wraps it in a standard ``DataLoader`` whose sampler is a
``BatchSampler``, so each batch is one tensor index into the preloaded tensors (no per-sample Python
work). FashionMNIST and CIFAR-10 are an explicit, online opt-in (``load_torchvision_dataset``);
nothing here downloads by default.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from helpers.i18n import _
from helpers.settings import parse_num_classes


@dataclass
class Split(Dataset):
    """Images ``X`` (N, C, H, W) and integer labels ``y`` (N,) on one device: a map-style Dataset.

    ``split[i]`` is one ``(image, label)`` pair; ``split[[i, j, ...]]`` (or an index tensor) is a whole
    batch in one indexing operation, which is how ``make_loader`` reads it.

    >>> X, y = load_digits().train[[0, 1, 2]]; X.shape, y.shape
    (torch.Size([3, 1, 8, 8]), torch.Size([3]))
    """

    X: Tensor
    y: Tensor

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int | Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long, device=self.X.device)
        return self.X[index], self.y[index]

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


def _digits_file() -> Path | None:
    """Where the installed scikit-learn keeps the digits (``datasets/data/digits.csv.gz``), found
    without importing it; ``None`` when scikit-learn is missing or lays its files out otherwise."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=1)
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as ``(images, labels)``: float64 (1797, 8, 8) with values 0..16, and int64.

    The same arrays as ``sklearn.datasets.load_digits()``'s ``images`` and ``target``, read straight
    from the file that scikit-learn ships (importing scikit-learn takes seconds; reading the file
    takes milliseconds). Falls back to scikit-learn's loader if the file is not where expected.
    Cached: treat the arrays as read-only.

    >>> images, labels = digits_arrays(); images.shape, labels[:3].tolist()
    ((1797, 8, 8), [0, 1, 2])
    """
    path = _digits_file()
    table = None
    if path is not None:
        try:
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",", ndmin=2)
        except (OSError, ValueError):
            table = None
    if table is None or table.shape != (1797, 65):
        try:
            from sklearn.datasets import load_digits as sk_load_digits
        except ImportError:
            raise ImportError(_("the bundled digits come with scikit-learn, which is not installed: "
                                "pip install scikit-learn (or pip install -r requirements.txt)")) from None
        bunch = sk_load_digits()
        images, labels = bunch.images, bunch.target.astype(np.int64)
    else:
        images, labels = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def load_digits(num_classes: int = 10, *, size: int = 8, channels: int = 1,
                device: torch.device | str = "cpu", seed: int = 0,
                val_fraction: float = 0.15, test_fraction: float = 0.15) -> ImageData:
    """The 1,797 bundled 8x8 digits, keeping digits ``0..num_classes-1``, split 70/15/15.

    Pixels are scaled to [0, 1] and standardised with the training set's mean and std. ``size`` resizes
    (bilinear) and ``channels=3`` repeats the grey channel for models that expect RGB.

    >>> load_digits(5, size=32, channels=3).image_shape
    (3, 32, 32)
    """
    num_classes = parse_num_classes(num_classes, source="num_classes")
    if channels not in (1, 3):
        raise ValueError(_("channels must be 1 or 3, got {value}").format(value=repr(channels)))
    if not isinstance(size, int) or size < 8:
        raise ValueError(_("size must be an integer >= 8 (the digits are 8x8), got {value}")
                         .format(value=repr(size)))
    raw_images, labels = digits_arrays()
    images = raw_images.astype(np.float32) / 16.0  # (1797, 8, 8), values 0..16 in the file
    train_idx, val_idx, test_idx = _split_indices(labels, range(num_classes), seed,
                                                  val_fraction, test_fraction)
    X = torch.from_numpy(images).unsqueeze(1)
    mean, std = X[train_idx].mean(), X[train_idx].std()
    X = (X - mean) / std
    if size != 8:
        X = F.interpolate(X, size=(size, size), mode="bilinear", align_corners=False)
    if channels == 3:
        X = X.repeat(1, 3, 1, 1)
    y = torch.from_numpy(labels.copy())  # the cached array stays read-only
    splits = [Split(X[i].contiguous(), y[i].contiguous()).to(device)
              for i in (train_idx, val_idx, test_idx)]
    return ImageData(*splits, class_names=[str(c) for c in range(num_classes)], name="digits",
                     extra={"mean": float(mean), "std": float(std)})


def _as_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``collate_fn`` of ``make_loader``: a batch is already two tensors, pass it through."""
    return batch


def make_loader(split: Split | Dataset, batch_size: int = 64, *, shuffle: bool = False,
                drop_last: bool = False, sampler: Sampler[int] | Iterable[int] | None = None,
                generator: torch.Generator | None = None, seed: int | None = None) -> DataLoader:
    """A ``torch.utils.data.DataLoader`` over a preloaded split that yields ``(X, y)`` batches.

    The sample order comes from a standard sampler, grouped by a ``BatchSampler``; the loader runs
    with ``batch_size=None``, so each batch is one index into the tensors, not ``batch_size``
    per-sample calls. The order is resumable in one of three ways:

    - ``shuffle=True``: a ``RandomSampler`` that draws its seed from torch's global RNG each epoch
      (or from ``generator``). ``save_checkpoint`` stores the global RNG, so a resumed run sees the
      same batches.
    - ``seed=...``: the order of epoch ``e`` depends only on ``seed + e`` (a one-process
      ``DistributedSampler``); call ``set_epoch(loader, e)`` each epoch (``fit`` does).
    - ``sampler=DistributedSampler(split, ...)``: each process reads its own shard; ``set_epoch``
      reshuffles every epoch.

    >>> loader = make_loader(load_digits().train, batch_size=64, shuffle=True)
    >>> X, y = next(iter(loader)); X.shape
    torch.Size([64, 1, 8, 8])
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(_("batch_size must be a positive integer, got {value}")
                         .format(value=repr(batch_size)))
    if sampler is not None and (shuffle or seed is not None or generator is not None):
        raise ValueError(_("pass either sampler=... or shuffle/seed/generator, not both: the sampler "
                           "alone decides the order (a DistributedSampler shuffles by itself)"))
    if seed is not None and generator is not None:
        raise ValueError(_("pass seed=... (the order depends on seed + epoch) or generator=..., "
                           "not both"))
    if sampler is None:
        if seed is not None:
            sampler = DistributedSampler(split, num_replicas=1, rank=0, shuffle=True, seed=seed)
        elif shuffle:
            sampler = RandomSampler(split, generator=generator)
        else:
            sampler = SequentialSampler(split)
    batches = BatchSampler(sampler, batch_size, drop_last)  # type: ignore[arg-type]
    return DataLoader(split, batch_size=None, sampler=batches, collate_fn=_as_batch)


def set_epoch(loader: object, epoch: int) -> bool:
    """Tell the sampler behind ``loader`` which epoch starts (a ``DistributedSampler`` reshuffles).

    Looks at the loader, its ``batch_sampler`` and the samplers they wrap; returns whether one of
    them has ``set_epoch``. A loader without one (a list of batches, a sequential order) is left alone.

    >>> set_epoch(make_loader(load_digits().train, seed=0), 3)
    True
    """
    seen: set[int] = set()
    todo = [loader]
    while todo:
        obj = todo.pop(0)
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        method = getattr(obj, "set_epoch", None)
        if callable(method):
            method(epoch)
            return True
        todo += [getattr(obj, "batch_sampler", None), getattr(obj, "sampler", None)]
    return False


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
        raise ValueError(_("unknown data set {name}; choose one of {choices}")
                         .format(name=repr(name), choices=sorted(_TORCHVISION_SETS)))
    num_classes = parse_num_classes(num_classes, source="num_classes")
    cls = getattr(torchvision.datasets, _TORCHVISION_SETS[key])
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; "Dataset not found" a RuntimeError
        hint = (_("the download failed (is this machine offline?)") if download else
                _("it is not under {root} and download=False").format(root=repr(str(root))))
        raise DatasetUnavailableError(_(
            "{dataset} is not available: {hint}. Either run once with download=True on a "
            "machine with internet access, or use the bundled digits, which need no network: "
            "helpers.data.load_digits(). ({error}: {detail})"
        ).format(dataset=cls.__name__, hint=hint, error=type(exc).__name__, detail=exc)) from None

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
