"""Relative-index sparse codec with filler zeros (Deep Compression, Fig. 2)."""

from __future__ import annotations

import numpy as np
import pytest

from nnshrink.storage.dense import bit_view
from nnshrink.storage.sparse import (
    entry_positions,
    filler_count,
    relative_indices,
    sparse_join,
    sparse_split,
)


def _roundtrip(flat: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    skips, values = sparse_split(flat, k)
    assert skips.size == 0 or skips.max() < 2**k
    back = sparse_join(skips, values, flat.size)
    np.testing.assert_array_equal(bit_view(back), bit_view(flat + 0))  # + 0 turns -0.0 into 0.0
    return skips, values


def test_paper_example_three_bits():
    # Han et al. Fig. 2 style: 3-bit indices, a gap of 8+ zeros needs a filler zero.
    flat = np.zeros(16, np.float32)
    flat[[1, 4, 15]] = [3.4, 0.9, 1.7]
    skips, values = _roundtrip(flat, 3)
    assert skips.tolist() == [1, 2, 7, 2]  # 1 zero, 2 zeros, 7 zeros + filler, 2 zeros
    assert values.tolist() == pytest.approx([3.4, 0.9, 0.0, 1.7])


@pytest.mark.parametrize("k", [1, 2, 4, 5, 8])
def test_gap_exactly_max_needs_no_filler_and_one_more_needs_one(k):
    span = 2**k
    exact = np.zeros(span, np.float32)
    exact[span - 1] = 1.0  # skip = span - 1 zeros: the largest k-bit relative index
    skips, _ = _roundtrip(exact, k)
    assert skips.tolist() == [span - 1]
    over = np.zeros(span + 1, np.float32)
    over[span] = 1.0  # skip = span zeros: one filler, then skip 0
    skips, values = _roundtrip(over, k)
    assert skips.tolist() == [span - 1, 0]
    assert values.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("k", [1, 3, 4, 5])
def test_random_sparse_roundtrip_and_filler_count(k):
    rng = np.random.default_rng(k)
    flat = rng.standard_normal(3000).astype(np.float32)
    flat[rng.random(flat.size) < 0.93] = 0
    skips, values = _roundtrip(flat, k)
    nnz = int((flat != 0).sum())
    assert skips.size == nnz + filler_count(flat, k)
    assert (values != 0).sum() == nnz


def test_long_gaps_need_several_fillers():
    flat = np.zeros(100, np.float32)
    flat[99] = 2.0
    skips, values = _roundtrip(flat, 2)
    assert skips.size == 99 // 4 + 1
    assert filler_count(flat, 2) == 24


def test_edge_cases():
    _roundtrip(np.zeros(0, np.float32), 4)
    skips, _ = _roundtrip(np.zeros(50, np.float32), 4)  # all zeros: nothing stored
    assert skips.size == 0
    _roundtrip(np.full(7, 1.5, np.float32), 4)  # fully dense: all skips 0
    _roundtrip(np.array([0, 0, 0, 9], np.int64), 1)
    neg_zero = np.array([0.0, -0.0, 0.0, 1.0], np.float32)  # -0.0 is a zero, restored as 0.0
    skips, _ = _roundtrip(neg_zero, 4)
    assert skips.tolist() == [3]
    skips, values = _roundtrip(np.array([-0.0] * 5 + [np.nan, 2.0], np.float32), 2)
    assert skips.tolist() == [3, 1, 0] and bit_view(values)[0] == 0  # the filler is +0.0


def test_positions_are_cumulative():
    skips, real = relative_indices(np.array([0, 5, 6, 40]), 4)
    positions = entry_positions(skips)
    assert positions[real].tolist() == [0, 5, 6, 40]
    assert positions[~real].tolist() == [22, 38]  # 33 zeros after 6: two fillers


def test_errors():
    with pytest.raises(ValueError, match="index_bits"):
        relative_indices(np.array([1]), 9)
    with pytest.raises(ValueError, match="increasing"):
        relative_indices(np.array([3, 3]), 4)
    with pytest.raises(ValueError, match="beyond length"):
        sparse_join(np.array([5]), np.array([1.0]), 3)
