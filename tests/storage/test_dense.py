"""Dense codec: raw little-endian values, exact fp16 round trip for fp16-representable values."""

from __future__ import annotations

import numpy as np
import pytest

from nnshrink.storage.dense import DTYPES, bit_view, decode_dense, encode_dense, fp16_exact


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_raw_roundtrip_every_dtype(dtype):
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(37) * 100).astype(DTYPES[dtype])
    data = encode_dense(values, dtype)
    assert len(data) == 37 * DTYPES[dtype].itemsize
    np.testing.assert_array_equal(decode_dense(data, dtype, 37), values)


def test_float32_bit_exact_specials():
    values = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38], np.float32)
    back = decode_dense(encode_dense(values, "float32"), "float32", values.size)
    np.testing.assert_array_equal(bit_view(back), bit_view(values))


def test_fp16_exact_for_representable_values():
    rng = np.random.default_rng(1)
    halfs = rng.standard_normal(1000).astype(np.float16)
    values = np.concatenate(
        [halfs.astype(np.float32), np.array([-0.0, 65504.0, 2**-24], np.float32)]
    )
    assert fp16_exact(values)
    data = encode_dense(values, "float16")
    assert len(data) == 2 * values.size
    back = decode_dense(data, "float16", values.size).astype(np.float32)
    np.testing.assert_array_equal(bit_view(back), bit_view(values))


def test_fp16_is_lossy_otherwise():
    values = np.array([0.1], np.float32)
    assert not fp16_exact(values)
    back = decode_dense(encode_dense(values, "float16"), "float16", 1).astype(np.float32)
    assert back[0] != values[0] and abs(back[0] - values[0]) < 1e-4


def test_little_endian_layout_and_errors():
    assert encode_dense(np.array([1.0], np.float32), "float32") == bytes.fromhex("0000803f")
    assert encode_dense(np.array([]), "float32") == b""
    with pytest.raises(ValueError, match="expected 2 x 4"):
        decode_dense(b"\x00" * 7, "float32", 2)
    with pytest.raises(ValueError, match="unsupported dtype"):
        encode_dense(np.zeros(1), "complex64")
