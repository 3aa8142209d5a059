"""Whole data sets as in-memory tensors, and fast batch loaders over them.

MNIST-sized data fits in memory many times over, and indexing a tensor is far faster than a
``torch.utils.data.DataLoader`` with per-sample Python calls: on 2 cores this loader adds almost
nothing to a LeNet epoch. Augmentation is written with tensor ops on whole batches.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator

import torch

from .readers import read_cifar10, read_fashion_mnist, read_mnist

_READERS = {"mnist": read_mnist, "fashion-mnist": read_fashion_mnist, "cifar10": read_cifar10}
# (mean, std) per channel, computed on the training sets.
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
_CACHE: dict[tuple[str, str, str], Dataset] = {}
SPLITS = ("train", "test", "val")
# The validation split is the *last* VAL_SIZE training samples (no shuffle in the carve): a
# loader with ``holdout=VAL_SIZE`` trains on the rest, so the two never overlap.
VAL_SIZE = 5000


@dataclasses.dataclass
class Dataset:
    """A whole split in memory: ``images`` float32 (N, C, H, W) in [0, 1], ``labels`` int64 (N,)."""

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int = 10

    def __len__(self) -> int:
        return len(self.labels)


def names() -> list[str]:
    """Data set names accepted by :func:`load`."""
    return sorted(_READERS)


def _check_name(name: str) -> None:
    if name not in _READERS:
        raise KeyError(f"unknown data set {name!r}; choose from {names()}")


def input_shape(name: str) -> tuple[int, int, int]:
    """``(C, H, W)`` of one sample of data set ``name``."""
    _check_name(name)
    return _SHAPES[name]


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``(mean, std)`` used by :func:`loader`."""
    _check_name(name)
    return _STATS[name]


def load(
    name: str,
    split: str = "train",
    root: str | os.PathLike | None = None,
    *,
    val_size: int = VAL_SIZE,
) -> Dataset:
    """Load a whole split into memory (cached per process).

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        split: ``"train"`` (all 60k / 50k training samples), ``"test"`` (10k) or ``"val"`` (the
            last ``val_size`` training samples, held out from training with
            ``loader(..., holdout=val_size)``).
        root: directory with the data files; ``None`` uses the default location of each set.
        val_size: samples in the ``"val"`` split.

    Example:
        >>> ds = load("mnist", "test")  # doctest: +SKIP
        >>> ds.images.shape
        torch.Size([10000, 1, 28, 28])
        >>> len(load("mnist", "val", val_size=5000))  # doctest: +SKIP
        5000
    """
    _check_name(name)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "val":
        train = load(name, "train", root)
        if isinstance(val_size, int) and val_size == 0:
            raise ValueError("val_size must be >= 1 for the 'val' split")
        lo = len(train) - _check_holdout(val_size, len(train), "val_size")
        # tensor slices are views: no copy, and the cache keeps one copy of the training set
        return Dataset(name, "val", train.images[lo:], train.labels[lo:], train.num_classes)
    key = (name, split, str(root))
    if key not in _CACHE:
        images, labels = _READERS[name](split, root)
        _CACHE[key] = Dataset(name, split, torch.from_numpy(images), torch.from_numpy(labels))
    return _CACHE[key]


def _check_holdout(value: int, total: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < total:
        raise ValueError(f"{what} must be an integer in [0, {total}) (training samples), got "
                         f"{value!r}")  # fmt: skip
    return value


def augment(images: torch.Tensor, generator: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random crop after zero padding (and random horizontal flip), on a whole batch.

    Args:
        images: (N, C, H, W) batch.
        generator: source of randomness (seeded by the loader for reproducibility).
        pad: pixels of zero padding before the random crop back to H x W.
        flip: whether to flip half the images horizontally.
    """
    n, _, h, w = images.shape
    dev = images.device  # index tensors live beside the images; the generator may be elsewhere
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=generator.device)
        dy, dx = dy.to(dev), dx.to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev)[None, :])[:, None, None, :]
        batch_idx = torch.arange(n, device=dev)[:, None, None, None]
        chan_idx = torch.arange(images.shape[1], device=dev)[None, :, None, None]
        images = padded[batch_idx, chan_idx, rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator, device=generator.device).to(dev) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images


class TensorLoader:
    """Batches over in-memory tensors: shuffle, normalize and augment with tensor ops.

    Args:
        images: (N, C, H, W) float tensor in [0, 1].
        labels: (N,) int64 tensor.
        batch_size: samples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: reshuffle each epoch (seeded: epoch ``e`` uses ``seed + e``).
        mean, std: per-channel normalization.
        augment_pad: random-crop padding in pixels (0 = none); ``flip``: random horizontal flips.
        seed: base seed; ``rank``/``world_size`` shard the samples for distributed training.

    Example:
        >>> loader = TensorLoader(torch.rand(10, 1, 4, 4), torch.zeros(10, dtype=torch.long), 4)
        >>> [x.shape[0] for x, _ in loader]
        [4, 4, 2]
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        augment_pad: int = 0,
        flip: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        name: str = "",
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        channels = images.shape[1]
        self.mean = torch.tensor(mean if mean is not None else (0.0,) * channels).view(1, -1, 1, 1)
        self.std = torch.tensor(std if std is not None else (1.0,) * channels).view(1, -1, 1, 1)
        self.augment_pad, self.flip = augment_pad, flip
        self.seed, self.epoch = seed, 0
        self.rank, self.world_size = rank, world_size
        self.name = name

    def to(self, device: torch.device | str) -> TensorLoader:
        """Move the whole data set to ``device`` once (no host-to-device copy per batch); returns self.

        Example:
            >>> loader = TensorLoader(torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)).to("cpu")
        """
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle order for ``epoch`` (as ``DistributedSampler.set_epoch`` does)."""
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per_rank = math.ceil(n / self.world_size)
            order = torch.cat([order, order[: per_rank * self.world_size - n]])
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self._order()) if self.world_size > 1 else len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this loader yields per epoch (this rank's share when sharded)."""
        return len(self._order())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        g = torch.Generator().manual_seed(10_000 + self.seed + self.epoch)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if self.drop_last and len(idx) < self.batch_size:
                break
            x = self.images[idx]
            if self.augment_pad or self.flip:
                x = augment(x, g, self.augment_pad, self.flip)
            yield (x - self.mean) / self.std, self.labels[idx]
        if self.shuffle:
            self.epoch += 1


def loader(
    name: str,
    split: str = "train",
    batch_size: int = 128,
    *,
    train: bool = False,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    holdout: int = 0,
    val_size: int = VAL_SIZE,
) -> TensorLoader:
    """A normalized loader over a whole split; ``train=True`` shuffles and augments.

    Augmentation: CIFAR-10 gets 4-pixel random crops and horizontal flips (the standard recipe);
    MNIST and Fashion-MNIST get none by default (their published baselines use none).

    Args:
        name: data set name (see :func:`names`).
        split: ``"train"``, ``"test"`` or ``"val"`` (the last ``val_size`` training samples).
        batch_size: samples per batch.
        train: shuffle every epoch and augment.
        root: data directory override.
        seed: shuffle/augmentation seed.
        limit: use only the first ``limit`` samples (quick runs and tests).
        rank: this process's shard for distributed data parallel training.
        world_size: number of shards.
        holdout: with ``split="train"``, leave out the last ``holdout`` samples (pass the
            ``val_size`` of the ``"val"`` loader: training then never sees a validation sample).
            ``limit`` counts from the start of what is left.
        val_size: samples of the ``"val"`` split.

    Example:
        >>> test = loader("mnist", "test", 256, limit=1000)  # doctest: +SKIP
        >>> train = loader("mnist", "train", holdout=5000, train=True)  # doctest: +SKIP
        >>> val = loader("mnist", "val", 1000, val_size=5000)  # doctest: +SKIP
        >>> train.num_samples + val.num_samples  # doctest: +SKIP
        60000
    """
    ds = load(name, split, root, val_size=val_size)
    images, labels = ds.images, ds.labels
    if holdout:
        if split != "train":
            raise ValueError(f"holdout applies to the 'train' split only, not {split!r}")
        keep = len(labels) - _check_holdout(holdout, len(labels), "holdout")
        images, labels = images[:keep], labels[:keep]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    mean, std = _STATS[name]
    is_cifar = name == "cifar10"
    return TensorLoader(
        images,
        labels,
        batch_size,
        shuffle=train,
        mean=mean,
        std=std,
        augment_pad=4 if (train and is_cifar) else 0,
        flip=train and is_cifar,
        seed=seed,
        rank=rank,
        world_size=world_size,
        name=name,
    )
