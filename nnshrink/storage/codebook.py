"""Codebook (weight-sharing) codec: every value becomes an index into shared distinct values.

:func:`build_codebook` compares values by bit pattern so the round trip is exact. The indices are
then bit-packed (``b`` bits each, :func:`nnshrink.storage.packbits.pack_bits`) or Huffman
coded, and the codebook itself is stored densely (fp32, or fp16 when that is exact or asked for).
Binary/ternary layers use :mod:`nnshrink.storage.packbits` directly (1 or 2 bits + scales).
"""

from __future__ import annotations

import numpy as np

from .dense import bit_view


def build_codebook(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(codebook, indices)`` with ``codebook[indices] == values`` bit for bit.

    The codebook holds the distinct values sorted by bit pattern (ascending for non-negative
    floats); indices are int64 with the shape of ``values``.

    Example:
        >>> cb, idx = build_codebook(np.array([0.5, -1.0, 0.5], np.float32))
        >>> cb[idx].tolist()
        [0.5, -1.0, 0.5]
    """
    values = np.ascontiguousarray(values)
    bits = bit_view(values).reshape(-1)
    keys = distinct_bits(values)
    # searchsorted is O(n log m): far cheaper than unique(return_inverse)'s full argsort.
    indices = np.searchsorted(keys, bits).astype(np.int64)
    return keys.view(values.dtype), indices.reshape(values.shape)


def distinct_bits(values: np.ndarray) -> np.ndarray:
    """Sorted distinct bit patterns of ``values`` (unsigned integers of the same width)."""
    return np.unique(bit_view(np.ascontiguousarray(values)).reshape(-1))


def codebook_bits(size: int) -> int:
    """Smallest index width ``b >= 1`` with ``2**b >= size``."""
    return max(1, int(size - 1).bit_length())


def decode_codebook(codebook: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Look indices up in the codebook (inverse of :func:`build_codebook`)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and codebook.size == 0:
        raise ValueError("codebook is empty but indices were stored")
    if indices.size and (indices.min() < 0 or indices.max() >= codebook.size):
        raise ValueError(f"codebook index out of range [0, {codebook.size})")
    return codebook[indices]
