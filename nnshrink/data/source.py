"""One entry point from a data description (recipe ``data:``, CLI flags) to a :class:`DataBundle`.

A description is a mapping with exactly one source key:

* ``name``: a built-in set (``mnist``, ``fashion-mnist``, ``cifar10``), with ``root``,
  ``eval_split: test | val`` and ``val_size`` as before;
* ``factory``: ``"package.module:callable"`` with optional ``kwargs``;
* ``file``: a ``.pt`` / ``.npz`` tensor file;
* ``image_dir``: an image folder, with ``image_size``;

plus ``batch_size`` (default 128), ``limit`` (first N evaluation samples) and ``train_limit``
(first N training samples), which apply to every source.

Example:
    >>> bundle = open_data({"name": "mnist", "limit": 100, "train_limit": 256})  # doctest: +SKIP
    >>> tuple(bundle.example_inputs().shape)  # doctest: +SKIP
    (128, 1, 28, 28)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .datasets import VAL_SIZE, loader, names
from .user import DataBundle, DataError, from_factory, from_image_folder, from_tensor_file

SOURCE_KEYS = ("name", "factory", "file", "image_dir")
OPTION_KEYS = (
    "kwargs", "root", "batch_size", "limit", "train_limit", "eval_split", "val_size", "image_size",
)  # fmt: skip


def source_of(spec: Mapping[str, Any]) -> str:
    """The one source key of a data description (raises :class:`DataError` otherwise)."""
    given = [k for k in SOURCE_KEYS if spec.get(k) is not None]
    if len(given) != 1:
        raise DataError(
            f"data: give exactly one of {list(SOURCE_KEYS)} (a built-in name, a factory "
            f"'package.module:callable', a .pt/.npz file or an image folder), got {given or 'none'}"
        )
    return given[0]


def describe(spec: Mapping[str, Any]) -> str:
    """A short label for reports: the name, factory, file or folder."""
    return str(spec[source_of(spec)])


def open_data(
    spec: Mapping[str, Any],
    *,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataBundle:
    """Build the loaders a description names (see the module docstring).

    Args:
        spec: the description.
        seed: shuffling seed of the training loader.
        rank: this process's shard of a built-in training set (distributed runs).
        world_size: number of shards.
    """
    source = source_of(spec)
    batch = int(spec.get("batch_size") or 128)
    if source == "name":
        bundle = _builtin(spec, batch, seed, rank, world_size)
    elif source == "factory":
        bundle = from_factory(spec["factory"], spec.get("kwargs"), batch_size=batch)
    elif source == "file":
        bundle = from_tensor_file(spec["file"], batch_size=batch, seed=seed)
    else:
        bundle = from_image_folder(
            spec["image_dir"], image_size=int(spec.get("image_size") or 32), batch_size=batch,
            seed=seed,
        )  # fmt: skip
    if source != "name":
        if spec.get("train_limit") and bundle.train is not None:
            bundle.train = Limited(bundle.train, int(spec["train_limit"]))
        if spec.get("limit"):
            bundle.test = None if bundle.test is None else Limited(bundle.test, int(spec["limit"]))
            bundle.val = None if bundle.val is None else Limited(bundle.val, int(spec["limit"]))
    return bundle


def _builtin(spec, batch: int, seed: int, rank: int, world_size: int) -> DataBundle:
    name = spec["name"]
    if name not in names():
        raise DataError(f"data: unknown data set {name!r}; built-in sets are {names()} (or give "
                        "a factory 'package.module:callable', a .pt/.npz file or an image folder)")  # fmt: skip
    val = spec.get("eval_split", "test") == "val"
    val_size = spec.get("val_size", VAL_SIZE)
    split = {"holdout": val_size} if val else {}
    root = spec.get("root")
    train = loader(name, "train", batch, train=True, root=root, seed=seed,
                   limit=spec.get("train_limit"), rank=rank, world_size=world_size, **split)  # fmt: skip
    evaluation = loader(name, "val" if val else "test", 1000, root=root, limit=spec.get("limit"),
                        val_size=val_size)  # fmt: skip
    bundle = DataBundle(train, evaluation, None, name=name, num_classes=10)
    if val:
        bundle.val = evaluation
    return bundle


class Limited:
    """The first ``limit`` samples of an iterable of ``(inputs, targets)`` batches.

    Example:
        >>> import torch
        >>> batches = [(torch.zeros(4, 2), torch.zeros(4)) for _ in range(3)]
        >>> [len(x) for x, _ in Limited(batches, 6)]
        [4, 2]
    """

    def __init__(self, batches: Iterable[Any], limit: int) -> None:
        if limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        self.batches, self.limit = batches, limit

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        left = self.limit
        for x, y in self.batches:
            if left <= 0:
                return
            if len(x) > left:
                x, y = x[:left], y[:left]
            left -= len(x)
            yield x, y

    def __len__(self) -> int:
        size = getattr(self.batches, "batch_size", None)
        if size:
            return -(-self.limit // size)
        return sum(1 for _ in itertools.islice(iter(self), None))

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batches, "set_epoch"):
            self.batches.set_epoch(epoch)
