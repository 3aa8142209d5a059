"""N:M semi-structured codec: ``N`` slots per group of ``M`` consecutive weights.

A tensor is seen as a ``(rows, cols)`` matrix: ``(shape[0], numel / shape[0])`` in C order (a
Linear's ``(out, in)`` weight, a conv's ``(out, in * kh * kw)``), or for a 2-D tensor its
transpose (Hugging Face GPT-2 ``Conv1D`` stores ``(in, out)``; its N:M groups run down the
columns). Each row is cut into groups of ``M`` columns. When no group holds more than ``N``
non-zeros, every group is stored as exactly ``N`` *slots*: the slot's position in its group
(``ceil(log2 M)`` bits, bit-packed) and its raw value. A 2:4 float32 weight thus costs
``2 x (16 + 2)`` bits per group of four with fp16-exact values, ``2 x (32 + 2)`` otherwise, and
no filler entries; the relative-index ``sparse`` codec pays 4-8 bits per position instead.

Groups with fewer than ``N`` non-zeros fill their slots with zero positions (first the ones
holding ``-0.0``, so it survives). Slots of a group are distinct and in increasing order.
The decoder checks every length and every position before building anything.
"""

from __future__ import annotations

import math

import numpy as np

from .container import FormatError
from .dense import DTYPES, bit_view, decode_dense, nonzero_mask
from .packbits import pack_bits, unpack_bits

GROUP_SIZES = (4, 8, 16)  # the M tried by the writer (2:4 and 4:8 are what hardware runs)
MAX_M = 256  # positions must fit the 8-bit packer


def position_bits(m: int) -> int:
    """Bits of one slot position in a group of ``m`` (at least 1).

    Example:
        >>> position_bits(4), position_bits(8), position_bits(5)
        (2, 3, 3)
    """
    return max(1, math.ceil(math.log2(m)))


def as_rows(array: np.ndarray, transposed: bool) -> np.ndarray:
    """The ``(rows, cols)`` matrix the codec groups (see the module docstring)."""
    if transposed:
        return np.ascontiguousarray(array.T)
    return np.ascontiguousarray(array).reshape(array.shape[0], -1)


def candidates(array: np.ndarray) -> list[tuple[int, int, bool]]:
    """``(N, M, transposed)`` layouts in which ``array`` is N:M sparse, ``N`` as small as it fits.

    Example:
        >>> w = np.array([[1.0, 0, 2, 0, 0, 0, 3, 4]], np.float32)
        >>> candidates(w)
        [(2, 4, False), (4, 8, False)]
    """
    if array.ndim < 2 or array.size == 0:
        return []
    out = []
    for transposed in (False, True) if array.ndim == 2 else (False,):
        nonzero = nonzero_mask(as_rows(array, transposed))
        for m in GROUP_SIZES:
            if nonzero.shape[1] % m:
                continue
            n = int(nonzero.reshape(-1, m).sum(axis=1).max())
            if 0 < n < m:
                out.append((n, m, transposed))
    return out


def nm_nbytes(numel: int, n: int, m: int, itemsize: int) -> int:
    """Bytes of the ``values`` and ``positions`` parts for ``numel`` elements."""
    slots = numel // m * n
    return slots * itemsize + math.ceil(slots * position_bits(m) / 8)


def nm_split(array: np.ndarray, n: int, m: int, transposed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(values, positions)`` of the ``N`` slots of every group, group after group.

    Raises ``ValueError`` when a group holds more than ``N`` non-zeros.

    Example:
        >>> values, positions = nm_split(np.array([[0.0, 5, 0, 7]], np.float32), 2, 4, False)
        >>> values.tolist(), positions.tolist()
        ([5.0, 7.0], [1, 3])
    """
    groups = as_rows(array, transposed).reshape(-1, m)
    nonzero = nonzero_mask(groups)
    if int(nonzero.sum(axis=1).max(initial=0)) > n:
        raise ValueError(f"the tensor is not {n}:{m} sparse in this layout")
    # rank: non-zero values first, then other non-zero bit patterns (-0.0), then +0.0
    rank = nonzero.astype(np.int8) * 2 + (bit_view(groups) != 0)
    slots = np.sort(np.argsort(-rank, axis=1, kind="stable")[:, :n], axis=1)
    return np.take_along_axis(groups, slots, axis=1).reshape(-1), slots.reshape(-1)


def nm_join(
    values: np.ndarray,
    positions: np.ndarray,
    shape: tuple[int, ...],
    n: int,
    m: int,
    transposed: bool,
) -> np.ndarray:
    """Inverse of :func:`nm_split`: the tensor of ``shape`` (C order), zeros outside the slots."""
    rows = shape[1] if transposed else shape[0]
    numel = math.prod(shape)
    groups = numel // m
    slots = np.asarray(positions, dtype=np.int64).reshape(groups, n)
    out = np.zeros((groups, m), dtype=values.dtype)
    np.put_along_axis(out, slots, values.reshape(groups, n), axis=1)
    matrix = out.reshape(rows, -1)
    return np.ascontiguousarray(matrix.T if transposed else matrix).reshape(shape)


def encode_positions(positions: np.ndarray, m: int) -> bytes:
    """Slot positions, bit-packed at :func:`position_bits` each."""
    return pack_bits(positions, position_bits(m))


def decode_nm(
    shape: tuple[int, ...],
    fields: dict,
    blobs: dict[str, bytes | memoryview],
    dtype: np.dtype,
) -> np.ndarray:
    """Validate an ``nm`` entry and rebuild the tensor; :class:`FormatError` on any mismatch.

    Every field and part length is checked before anything is allocated.

    Args:
        shape: the tensor's shape from the header.
        fields: the entry's header fields (``n``, ``m``, ``transposed``, ``entries``,
            ``value_dtype``).
        blobs: its parts, ``values`` and ``positions``.
        dtype: the numpy dtype of the tensor's raw values.
    """
    n, m, transposed = fields.get("n"), fields.get("m"), fields.get("transposed")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, m)):
        raise FormatError(f"nm entry: n and m must be integers, got {n!r}, {m!r}")
    if not 0 < n < m <= MAX_M:
        raise FormatError(f"nm entry: need 0 < n < m <= {MAX_M}, got n={n}, m={m}")
    if not isinstance(transposed, bool) or (transposed and len(shape) != 2):
        raise FormatError(f"nm entry: transposed={transposed!r} is invalid for shape {list(shape)}")
    if len(shape) < 2 or min(shape) < 1:
        raise FormatError(f"nm entry: shape {list(shape)} has no (rows, cols) layout")
    numel = math.prod(shape)
    rows = shape[1] if transposed else shape[0]
    cols = numel // rows
    if cols % m:
        raise FormatError(f"nm entry: {cols} columns are not a multiple of m={m}")
    slots = numel // m * n
    value_dtype = fields.get("value_dtype")
    if value_dtype not in DTYPES:
        raise FormatError(f"nm entry: unknown value_dtype {value_dtype!r}")
    values_blob, positions_blob = blobs.get("values"), blobs.get("positions")
    if values_blob is None or positions_blob is None:
        raise FormatError("nm entry: needs the parts 'values' and 'positions'")
    if fields.get("entries") != slots or len(values_blob) != slots * DTYPES[value_dtype].itemsize:
        raise FormatError(
            f"nm entry: {slots} slots expected, header says {fields.get('entries')!r} and the "
            f"values part holds {len(values_blob)} bytes of {value_dtype}"
        )
    values = decode_dense(values_blob, value_dtype, slots).astype(dtype)
    bits = position_bits(m)
    if len(positions_blob) != math.ceil(slots * bits / 8):
        raise FormatError(
            f"nm entry: positions part has {len(positions_blob)} bytes, expected "
            f"{math.ceil(slots * bits / 8)} ({slots} x {bits} bits)"
        )
    positions = unpack_bits(positions_blob, bits, slots).astype(np.int64).reshape(-1, n)
    if positions.size and (positions.max() >= m or (np.diff(positions, axis=1) <= 0).any()):
        raise FormatError(f"nm entry: slot positions must be increasing and below m={m}")
    return nm_join(values, positions, tuple(shape), n, m, transposed)
