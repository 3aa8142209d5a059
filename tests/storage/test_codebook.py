"""Codebook codec: exact round trip through bit-packed or Huffman-coded indices."""

from __future__ import annotations

import numpy as np
import pytest

from nnshrink.storage.codebook import build_codebook, codebook_bits, decode_codebook
from nnshrink.storage.dense import bit_view
from nnshrink.storage.tensors import decode_stream, encode_stream


@pytest.mark.parametrize("levels", [1, 2, 3, 32, 256])
@pytest.mark.parametrize("coding", ["packed", "huffman"])
def test_roundtrip_through_streams(levels, coding):
    rng = np.random.default_rng(levels)
    shared = rng.standard_normal(levels).astype(np.float32)
    values = shared[rng.integers(0, levels, size=(20, 30))]
    codebook, indices = build_codebook(values)
    assert codebook.size == np.unique(values).size
    bits = codebook_bits(codebook.size)
    assert 2 ** (bits - 1) < max(codebook.size, 2) <= 2**bits
    data = encode_stream(indices.reshape(-1), bits, coding)
    if coding == "packed":
        assert len(data) == (values.size * bits + 7) // 8
    back_idx = decode_stream(data, bits, coding, values.size).reshape(values.shape)
    back = decode_codebook(codebook, back_idx)
    np.testing.assert_array_equal(bit_view(back), bit_view(values))


def test_codebook_keeps_signed_zero_and_nan_apart():
    values = np.array([0.0, -0.0, np.nan, 0.0, 1.0], np.float32)
    codebook, indices = build_codebook(values)
    assert codebook.size == 4
    np.testing.assert_array_equal(bit_view(decode_codebook(codebook, indices)), bit_view(values))


def test_edge_cases():
    codebook, indices = build_codebook(np.zeros(0, np.float32))
    assert codebook.size == 0 and indices.size == 0
    codebook, indices = build_codebook(np.zeros(9, np.float32))
    assert codebook.tolist() == [0.0] and indices.max() == 0
    assert codebook_bits(1) == 1 and codebook_bits(2) == 1 and codebook_bits(33) == 6
    with pytest.raises(ValueError, match="out of range"):
        decode_codebook(codebook, np.array([1]))
