"""The user's own data: a factory, a tensor file or an image folder, as one :class:`DataBundle`.

Every command, recipe and ``advise`` takes data in one of these forms (besides the built-in
names ``mnist``, ``fashion-mnist``, ``cifar10``):

* a factory ``"package.module:callable"`` returning ``(train, test)`` or ``(train, test, val)``,
  each an iterable of ``(inputs, targets)`` batches (any ``torch.utils.data.DataLoader``); it
  gets ``batch_size=`` when its signature takes it;
* a tensor file ``.pt`` (read with ``torch.load(weights_only=True)``) or ``.npz`` (no pickles)
  holding ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val``;
* an image folder in the torchvision ``ImageFolder`` layout: ``DIR/<class>/<image>`` (a fifth of
  each class, seeded, becomes the test split) or ``DIR/train/<class>/...`` +
  ``DIR/test/<class>/...`` (+ ``DIR/val/...``). Images are resized to ``image_size`` and
  normalised with the per-channel mean and std of the training images (Pillow reads them).

Example-input shapes always come from the first batch, never from a data-set name.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> ds = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
    >>> bundle = DataBundle(DataLoader(ds, batch_size=8), DataLoader(ds, batch_size=8))
    >>> tuple(bundle.example_inputs().shape)
    (8, 3)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.references import ReferenceError_, call_with_supported, import_callable
from .datasets import TensorLoader

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_TENSOR_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(ValueError):
    """The user's data cannot be read or has the wrong shape; the message names the fix."""


@dataclasses.dataclass
class DataBundle:
    """Training, test and (optional) validation batches, plus where they came from.

    Attributes:
        train: iterable of ``(inputs, targets)`` batches for training and calibration.
        test: iterable of batches for the reported metric.
        val: batches for model selection (``advise``), or ``None``.
        name: a short label for reports (``"mnist"``, ``"mypkg.data:load"``, ``"images.npz"``).
        num_classes: number of classes when known (image folders, built-in sets).
    """

    train: Iterable[Any] | None
    test: Iterable[Any] | None
    val: Iterable[Any] | None = None
    name: str = "user data"
    num_classes: int | None = None

    def example_inputs(self) -> Any:
        """The inputs of the first batch (training batches first, else test batches)."""
        for source in (self.train, self.test, self.val):
            if source is not None:
                batch = first_batch(source, self.name)
                return batch[0]
        raise DataError(f"{self.name}: no batches to take example inputs from")

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (the first batch's shape without its batch axis)."""
        x = self.example_inputs()
        if not isinstance(x, torch.Tensor):
            raise DataError(f"{self.name}: inputs are {type(x).__name__}, not tensors")
        return tuple(x.shape[1:])


def first_batch(loader: Iterable[Any], name: str = "data") -> tuple[Any, Any]:
    """The first ``(inputs, targets)`` batch of ``loader``, checked for that shape."""
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise DataError(f"{name}: the loader yields no batches") from None
    except TypeError:
        raise DataError(f"{name}: {type(loader).__name__} is not an iterable of batches") from None
    if not isinstance(batch, list | tuple) or len(batch) != 2:
        raise DataError(
            f"{name}: batches must be (inputs, targets) pairs, got {type(batch).__name__}"
            f"{' of length ' + str(len(batch)) if isinstance(batch, list | tuple) else ''}; "
            "return loaders that yield (x, y), e.g. torch.utils.data.DataLoader(TensorDataset(x, y))"
        )
    return batch[0], batch[1]


def from_factory(
    reference: str, kwargs: dict[str, Any] | None = None, *, batch_size: int | None = None
) -> DataBundle:
    """Call the user's data factory and check what it returns.

    Args:
        reference: ``"package.module:callable"`` returning ``(train, test)`` or
            ``(train, test, val)``.
        kwargs: keyword arguments for the callable.
        batch_size: passed as ``batch_size=`` when the callable accepts it.
    """
    try:
        fn = import_callable(reference, "data factory")
    except ReferenceError_ as exc:
        raise DataError(str(exc)) from None
    optional = {} if batch_size is None else {"batch_size": batch_size}
    out = call_with_supported(fn, dict(kwargs or {}), optional)
    return _bundle_from(out, reference)


def _bundle_from(out: Any, name: str) -> DataBundle:
    if not isinstance(out, list | tuple) or len(out) not in (2, 3):
        raise DataError(
            f"{name} returned {type(out).__name__}; a data factory returns (train, test) or "
            "(train, test, val), each an iterable of (inputs, targets) batches"
        )
    loaders = list(out) + [None] * (3 - len(out))
    for label, loader in zip(("train", "test", "val"), loaders):
        if loader is not None:
            first_batch(loader, f"{name} ({label})")
    return DataBundle(loaders[0], loaders[1], loaders[2], name=name)


def from_tensor_file(
    path: str | os.PathLike, *, batch_size: int = 128, seed: int = 0
) -> DataBundle:
    """Loaders over the arrays of a ``.pt`` or ``.npz`` file (``x_train``, ``y_train``, ...).

    ``.pt`` files are read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only) and ``.npz`` with ``numpy.load(allow_pickle=False)``: neither runs code.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such data file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: torch.from_numpy(archive[k].copy()) for k in archive.files}
        elif path.suffix in (".pt", ".pth"):
            arrays = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise DataError(f"{path}: a tensor data file ends in .pt or .npz")
    except DataError:
        raise
    except Exception as exc:  # pickle/zip/format errors of either reader
        raise DataError(
            f"{path}: not a readable tensor file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(arrays, dict):
        raise DataError(f"{path}: expected a mapping of arrays, got {type(arrays).__name__}")
    missing = [k for k in _TENSOR_KEYS if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing arrays {missing}; it must hold {list(_TENSOR_KEYS)}"
                        " (and optionally x_val, y_val)")  # fmt: skip
    splits = {}
    for split in ("train", "test", "val"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None and y is None:
            continue
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"{path}: x_{split} has {x.shape[0]} samples but y_{split} {y.shape[0]}"
            )
        if x.dtype in (torch.float64, torch.float16, torch.uint8, torch.int8):
            x = x.float()
        splits[split] = (x, y)
    loaders = {
        split: _tensor_loader(x, y, batch_size, shuffle=split == "train", seed=seed, name=path.name)
        for split, (x, y) in splits.items()
    }
    y_train = splits["train"][1]
    classes = (
        int(y_train.max()) + 1
        if y_train.dtype in (torch.int64, torch.int32) and len(y_train)
        else None
    )
    return DataBundle(loaders["train"], loaders["test"], loaders.get("val"), name=path.name,
                      num_classes=classes)  # fmt: skip


class _Loader(TensorLoader):
    """A :class:`TensorLoader` for tensors of any rank (not only images)."""

    def __init__(self, x, y, batch_size, *, shuffle, seed, name):
        self.images, self.labels = x, y
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, False
        self.augment_pad, self.flip = 0, False
        self.seed, self.epoch, self.rank, self.world_size, self.name = seed, 0, 0, 1, name
        self.mean = self.std = None

    def __iter__(self):
        order = self._order()
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.images[idx], self.labels[idx]
        if self.shuffle:
            self.epoch += 1

    def to(self, device):
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self


def _tensor_loader(x, y, batch_size, *, shuffle, seed, name):
    if x.dim() == 4:
        return TensorLoader(x, y, batch_size, shuffle=shuffle, seed=seed, name=name)
    return _Loader(x, y, batch_size, shuffle=shuffle, seed=seed, name=name)


def from_image_folder(
    root: str | os.PathLike,
    *,
    image_size: int = 32,
    batch_size: int = 128,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> DataBundle:
    """Loaders over an ``ImageFolder``-style directory (see the module docstring).

    Args:
        root: the folder.
        image_size: images are resized to ``image_size x image_size``.
        batch_size: training batch size (evaluation uses the same).
        seed: shuffling, and the class-wise test split when the folder has no ``test/``.
        test_fraction: share of each class held out as the test split in the flat layout.
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        raise DataError("image folders need Pillow: pip install pillow") from None
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such image folder")
    split_dirs = {s: root / s for s in ("train", "test", "val") if (root / s).is_dir()}
    if "train" in split_dirs and "test" not in split_dirs:
        raise DataError(
            f"{root}: has train/ but no test/; add test/<class>/... or use a flat layout"
        )
    if "train" in split_dirs:
        classes = _classes(split_dirs["train"])
        files = {s: _files(d, classes) for s, d in split_dirs.items()}
    else:
        classes = _classes(root)
        everything = _files(root, classes)
        files = _split_flat(everything, len(classes), test_fraction, seed)
    if not files["train"]:
        raise DataError(f"{root}: no images found (suffixes {IMAGE_SUFFIXES})")
    modes = {Image.open(p).mode for p, _ in files["train"][:64]}
    channels = 1 if modes <= {"L", "1", "I", "I;16", "F"} else 3
    tensors = {s: _read_images(f, image_size, channels, Image) for s, f in files.items()}
    x_train = tensors["train"][0]
    mean = tuple(float(v) for v in x_train.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-6) for v in x_train.std(dim=(0, 2, 3)))
    loaders = {
        s: TensorLoader(
            x, y, batch_size, shuffle=s == "train", mean=mean, std=std, seed=seed, name=root.name
        )  # fmt: skip
        for s, (x, y) in tensors.items()
    }
    return DataBundle(loaders["train"], loaders.get("test"), loaders.get("val"), name=root.name,
                      num_classes=len(classes))  # fmt: skip


def _classes(folder: Path) -> list[str]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{folder}: no class folders; the layout is {folder}/<class>/<image>")
    return classes


def _files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    out = []
    for label, name in enumerate(classes):
        sub = folder / name
        if sub.is_dir():
            out += [
                (p, label) for p in sorted(sub.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
            ]
    return out


def _split_flat(files, num_classes: int, fraction: float, seed: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(num_classes):
        members = [f for f in files if f[1] == label]
        order = rng.permutation(len(members))
        cut = int(round(fraction * len(members)))
        test += [members[i] for i in order[:cut]]
        train += [members[i] for i in order[cut:]]
    return {"train": train, "test": test}


def _read_images(
    files, size: int, channels: int, image_module
) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.empty(len(files), channels, size, size)
    y = torch.empty(len(files), dtype=torch.long)
    for i, (path, label) in enumerate(files):
        with image_module.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((size, size))
            arr = np.asarray(img, dtype=np.float32) / 255.0
        x[i] = torch.from_numpy(arr if channels == 3 else arr[..., None]).permute(2, 0, 1)
        y[i] = label
    return x, y


def holdout_split(
    train: Iterable[Any], fraction: float = 0.1, *, seed: int = 0
) -> tuple[Iterable[Any], Iterable[Any]]:
    """Split training batches into ``(train_rest, held_back)`` without overlap.

    In-memory loaders (ours, or a ``DataLoader`` over an indexable dataset) are split by sample
    (seeded); any other iterable is read once into tensors and split the same way.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if isinstance(train, TensorLoader):
        x, y = train.images, train.labels
        rebuild = lambda xs, ys, shuffle: _clone_loader(train, xs, ys, shuffle)  # noqa: E731
    else:
        dataset = getattr(train, "dataset", None)
        if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            from torch.utils.data import DataLoader, Subset

            n = len(dataset)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
            cut = max(1, int(round(fraction * n)))
            size = getattr(train, "batch_size", None) or 128
            return (DataLoader(Subset(dataset, order[cut:]), batch_size=size, shuffle=True),
                    DataLoader(Subset(dataset, order[:cut]), batch_size=size))  # fmt: skip
        xs, ys = zip(*((b[0], b[1]) for b in train))
        x, y = torch.cat(xs), torch.cat(ys)
        size = len(xs[0])
        rebuild = lambda xs_, ys_, shuffle: _tensor_loader(  # noqa: E731
            xs_, ys_, size, shuffle=shuffle, seed=seed, name="held-back"
        )
    n = len(y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = max(1, int(round(fraction * n)))
    held, rest = order[:cut], order[cut:]
    return rebuild(x[rest], y[rest], True), rebuild(x[held], y[held], False)


def _clone_loader(template: TensorLoader, x, y, shuffle: bool) -> TensorLoader:
    clone = TensorLoader.__new__(type(template))
    clone.__dict__.update(template.__dict__)
    clone.images, clone.labels, clone.shuffle, clone.epoch = x, y, shuffle, 0
    return clone
