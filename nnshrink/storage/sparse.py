"""Sparse codec of Deep Compression: positions as k-bit relative indices with filler zeros.

A flattened tensor is stored as a list of *entries*. Each entry records how many zeros it skips
since the previous entry (its *relative index*, ``0 .. 2**k - 1``) and a value. When a run of
zeros is longer than ``2**k - 1``, a *filler* entry with skip ``2**k - 1`` and value zero is
inserted (Han et al. 2016, Fig. 2), so a skip of ``s`` zeros costs ``s // 2**k`` fillers.
Zeros after the last entry need nothing: the tensor length comes from the shape.

For floats, ``-0.0`` counts as zero and comes back as ``+0.0`` (see :func:`.dense.nonzero_mask`).
"""

from __future__ import annotations

import numpy as np

from .dense import nonzero_mask


def _check_bits(index_bits: int) -> None:
    if not 1 <= index_bits <= 8:
        raise ValueError(f"index_bits must be in 1..8, got {index_bits}")


def relative_indices(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn sorted absolute positions into relative indices with fillers.

    Args:
        positions: strictly increasing non-negative positions of the non-zeros.
        index_bits: ``k``; each relative index is ``< 2**k``.

    Returns:
        ``(skips, is_real)``: one int64 skip per entry, and a bool mask that is False on fillers.

    Example:
        >>> skips, real = relative_indices(np.array([1, 12]), 3)
        >>> skips.tolist(), real.tolist()
        ([1, 7, 2], [True, False, True])
    """
    _check_bits(index_bits)
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    if pos.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    gaps = np.diff(pos, prepend=-1) - 1  # zeros skipped before each non-zero
    if gaps.min() < 0:
        raise ValueError("positions must be strictly increasing and non-negative")
    span = 1 << index_bits
    fillers = gaps // span
    counts = fillers + 1
    last = np.cumsum(counts) - 1  # entry index of each real non-zero
    skips = np.full(int(counts.sum()), span - 1, dtype=np.int64)
    skips[last] = gaps - fillers * span
    is_real = np.zeros(skips.size, dtype=bool)
    is_real[last] = True
    return skips, is_real


def entry_positions(skips: np.ndarray) -> np.ndarray:
    """Absolute positions of the entries (real and filler) given their relative indices."""
    return np.cumsum(np.asarray(skips, dtype=np.int64) + 1) - 1


def sparse_split(flat: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a 1-D array into ``(skips, entry_values)``; filler values are zero.

    Example:
        >>> skips, vals = sparse_split(np.array([0, 5, 0, 0, 0, 0, 0, 0, 0, 7.0]), 2)
        >>> skips.tolist(), vals.tolist()
        ([1, 3, 3], [5.0, 0.0, 7.0])
    """
    flat = np.ascontiguousarray(flat).reshape(-1)
    positions = np.flatnonzero(nonzero_mask(flat))
    skips, is_real = relative_indices(positions, index_bits)
    values = flat[entry_positions(skips)]
    values[~is_real] = 0  # fillers store +0 even where the tensor held -0.0
    return skips, values


def sparse_join(skips: np.ndarray, entry_values: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`sparse_split`: scatter entry values into ``length`` zeros."""
    skips = np.asarray(skips)
    if skips.size > length or (skips.size and skips.min() < 0):
        raise ValueError(f"{skips.size} entries (or a negative skip) cannot fit length {length}")
    slots = entry_positions(skips)
    if slots.size and slots[-1] >= length:
        raise ValueError(f"relative indices reach position {slots[-1]} beyond length {length}")
    values = np.asarray(entry_values)
    if values.shape[0] != slots.size:
        raise ValueError(f"{slots.size} relative indices but {values.shape[0]} values")
    out = np.zeros(length, dtype=values.dtype)
    out[slots] = values
    return out


def filler_count(flat: np.ndarray, index_bits: int) -> int:
    """Number of filler entries :func:`sparse_split` would insert (cheap size estimate)."""
    positions = np.flatnonzero(nonzero_mask(np.asarray(flat).reshape(-1)))
    if positions.size == 0:
        return 0
    gaps = np.diff(positions, prepend=-1) - 1
    return int((gaps >> index_bits).sum())
