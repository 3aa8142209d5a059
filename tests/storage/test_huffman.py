"""Canonical Huffman: exact round trips, optimal length (heapq oracle), canonical codes."""

from __future__ import annotations

import heapq

import numpy as np
import pytest

from nnshrink.storage.huffman import (
    canonical_codes,
    code_lengths,
    huffman_bits,
    huffman_decode,
    huffman_encode,
)


def _reference_cost(freqs) -> int:
    """Total Huffman bits = sum of merge costs (independent of tie-breaking)."""
    heap = [int(f) for f in freqs if f > 0]
    if len(heap) == 1:
        return heap[0]  # one symbol still needs one bit per occurrence
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def _roundtrip(symbols: np.ndarray, alphabet: int) -> bytes:
    data = huffman_encode(symbols, alphabet)
    out = huffman_decode(data, alphabet, symbols.size)
    np.testing.assert_array_equal(out, symbols)
    return data


@pytest.mark.parametrize("alphabet", [2, 4, 32, 256])
def test_random_roundtrip_and_size(alphabet):
    rng = np.random.default_rng(alphabet)
    probs = rng.dirichlet(np.full(alphabet, 0.3))
    symbols = rng.choice(alphabet, size=5000, p=probs)
    data = _roundtrip(symbols, alphabet)
    freqs = np.bincount(symbols, minlength=alphabet)
    payload_bits = _reference_cost(freqs)
    assert len(data) == alphabet + (payload_bits + 7) // 8


@pytest.mark.parametrize("seed", range(5))
def test_code_lengths_are_optimal(seed):
    rng = np.random.default_rng(seed)
    freqs = rng.integers(0, 1000, size=rng.integers(2, 64))
    freqs[0] = max(freqs[0], 1)
    assert huffman_bits(freqs) == _reference_cost(freqs)


def test_skewed_fibonacci_frequencies_give_long_codes():
    fib = [1, 1]
    while len(fib) < 30:
        fib.append(fib[-1] + fib[-2])
    lengths = code_lengths(np.array(fib))
    assert lengths.max() == 29  # the deepest possible tree
    symbols = np.repeat(np.arange(30), [min(f, 50) for f in fib])
    _roundtrip(symbols, 30)


def test_codes_are_canonical_and_prefix_free():
    lengths = np.array([3, 2, 0, 3, 2, 2])
    codes = canonical_codes(lengths)
    # by (length, symbol): 1->00, 4->01, 5->10, 0->110, 3->111
    assert [format(int(codes[s]), f"0{lengths[s]}b") for s in (1, 4, 5, 0, 3)] == [
        "00",
        "01",
        "10",
        "110",
        "111",
    ]
    words = [format(int(codes[s]), f"0{lengths[s]}b") for s in np.flatnonzero(lengths)]
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)


def test_encoder_emits_canonical_code_bits():
    data = huffman_encode(np.array([0, 0, 0, 1, 2]), 3)
    # freqs 3,1,1 -> lengths 1,2,2 -> codes 0, 10, 11 -> stream 0 0 0 10 11 -> 0b00010110
    assert data == bytes([1, 2, 2, 0b00010110])


def test_single_symbol_alphabet():
    symbols = np.full(17, 3)
    data = _roundtrip(symbols, 8)
    assert len(data) == 8 + 3  # 17 one-bit codes


def test_empty_input():
    data = _roundtrip(np.zeros(0, np.int64), 16)
    assert data == bytes(16)


def test_max_symbol_and_all_symbols():
    symbols = np.arange(256).repeat(3)
    _roundtrip(symbols, 256)
    _roundtrip(np.array([255]), 256)


def test_rejects_out_of_range_and_short_streams():
    with pytest.raises(ValueError, match="symbols must lie"):
        huffman_encode(np.array([4]), 4)
    data = huffman_encode(np.arange(4).repeat(10), 4)
    with pytest.raises(ValueError):
        huffman_decode(data[:-2], 4, 40)
    with pytest.raises(ValueError, match="length table"):
        huffman_decode(data[:2], 4, 40)
    bad = bytes([1, 1, 1, 0]) + data[4:]  # three 1-bit codes: not a prefix code
    with pytest.raises(ValueError, match="prefix code"):
        huffman_decode(bad, 4, 40)


def test_large_stream_is_fast_enough():
    rng = np.random.default_rng(0)
    symbols = rng.geometric(0.3, size=200_000).clip(max=31) - 1
    _roundtrip(symbols, 32)
