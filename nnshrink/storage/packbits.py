"""Bit packing: store symbols of 1..8 bits densely, and binary/ternary weights in 1 or 2 bits.

All functions here are pure (arrays/tensors in, bytes out and back) and round-trip exactly.

Bit order: symbol ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, least significant bit
first, and the stream fills each byte from its least significant bit (``numpy.packbits`` with
``bitorder="little"``). The last byte is zero-padded; ``n`` symbols take ``ceil(n * bits / 8)``
bytes.

Binary weights ``w = s_c * sign`` (one positive scale per output channel ``c``, or one for the
layer) are stored as one bit per weight (1 = positive) plus the scales. Ternary weights
``w in {-n_c, 0, +p_c}`` are stored as 2-bit symbols (0 = zero, 1 = positive, 2 = negative) plus a
``(C, 2)`` table of (positive, negative magnitude); one row when the whole layer shares them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

__all__ = [
    "PackedTensor",
    "pack_binary",
    "pack_bits",
    "pack_ternary",
    "packed_nbytes",
    "unpack_binary",
    "unpack_bits",
    "unpack_ternary",
]


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes taken by ``count`` symbols of ``bits`` bits: ``ceil(count * bits / 8)``."""
    return math.ceil(count * bits / 8)


def _as_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).reshape(-1)


def pack_bits(values: torch.Tensor | np.ndarray, bits: int) -> bytes:
    """Pack integer symbols ``0 <= v < 2**bits`` into a dense little-endian bit stream.

    Args:
        values: integer tensor or array of any shape (flattened in C order).
        bits: bits per symbol, 1..8.

    Returns:
        ``ceil(len * bits / 8)`` bytes.

    Example:
        >>> pack_bits(np.array([1, 0, 3]), 2)
        b'1'
    """
    _check_bits(bits)
    flat = _as_numpy(values)
    if flat.size and (flat.dtype.kind not in "iub"):
        raise ValueError(f"pack_bits needs integer symbols, got dtype {flat.dtype}")
    flat = flat.astype(np.int64, copy=False)
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << bits)):
        raise ValueError(
            f"symbols must lie in [0, {1 << bits}) for bits={bits}; got range "
            f"[{flat.min()}, {flat.max()}] (use more bits)"
        )
    # (n, 8) little-endian bit planes of each byte; keep the low ``bits`` planes per symbol.
    planes = np.unpackbits(flat.astype(np.uint8)[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes | bytearray | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: read ``count`` symbols of ``bits`` bits (uint8 array).

    Example:
        >>> unpack_bits(pack_bits(np.array([5, 0, 7]), 3), 3, 3).tolist()
        [5, 0, 7]
    """
    _check_bits(bits)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    need = packed_nbytes(count, bits)
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size < need:
        raise ValueError(f"{count} symbols of {bits} bits need {need} bytes, got {buf.size}")
    stream = np.unpackbits(buf[:need], bitorder="little", count=count * bits)
    planes = stream.reshape(count, bits).astype(np.uint16)
    weights = (1 << np.arange(bits, dtype=np.uint16))[None, :]
    return (planes * weights).sum(axis=1).astype(np.uint8)


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")


@dataclasses.dataclass(frozen=True)
class PackedTensor:
    """A low-bit weight tensor in its stored form.

    Attributes:
        data: the packed symbols (see the module docstring for the layout).
        shape: shape of the unpacked tensor; dim 0 is the output channel.
        bits: 1 (binary) or 2 (ternary).
        scales: float32 array; binary ``(C,)`` or ``(1,)``, ternary ``(C, 2)`` or ``(1, 2)``.
    """

    data: bytes
    shape: tuple[int, ...]
    bits: int
    scales: np.ndarray

    @property
    def nbytes(self) -> int:
        """Stored size: packed symbols plus float32 scales."""
        return len(self.data) + int(self.scales.size) * 4


def _per_channel(w: torch.Tensor) -> np.ndarray:
    w = w.detach().cpu().to(torch.float32)
    if w.dim() == 0:
        raise ValueError("expected a weight tensor with an output-channel dimension, got a scalar")
    return w.reshape(w.shape[0], -1).numpy()


def _channel_values(rows: np.ndarray, select: np.ndarray, what: str) -> np.ndarray:
    """The single value each row holds where ``select`` is true."""
    out = np.zeros(rows.shape[0], dtype=np.float32)
    present = np.zeros(rows.shape[0], dtype=bool)
    for c in range(rows.shape[0]):
        vals = np.unique(rows[c][select[c]])
        if vals.size > 1:
            raise ValueError(
                f"channel {c} has {vals.size} distinct {what} values; expected one scale per "
                "channel (quantize the weights first, e.g. with nnshrink's binary/ternary layers)"
            )
        if vals.size:
            out[c], present[c] = vals[0], True
    # A channel without such entries never reads its scale: give it a shared one so that a
    # per-layer scale still compacts to a single row.
    if present.any():
        out[~present] = out[present][0]
    return out


def _compact(scales: np.ndarray) -> np.ndarray:
    """Store one row instead of C when every channel shares the same scale(s)."""
    if scales.shape[0] > 1 and np.all(scales == scales[:1]):
        return scales[:1].copy()
    return scales


def pack_binary(w: torch.Tensor) -> PackedTensor:
    """Pack a binary weight tensor ``w[c] = s_c * (+-1)`` into 1 bit per weight plus scales.

    Args:
        w: weights whose every entry in output channel ``c`` is ``+s_c`` or ``-s_c`` (``s_c > 0``).

    Raises:
        ValueError: a zero weight (use :func:`pack_ternary`) or several magnitudes in a channel.

    Example:
        >>> p = pack_binary(torch.tensor([[0.5, -0.5, 0.5], [-2.0, 2.0, 2.0]]))
        >>> len(p.data), p.scales.tolist()
        (1, [0.5, 2.0])
    """
    rows = _per_channel(w)
    if np.any(rows == 0):
        raise ValueError("binary weights cannot contain zeros; use pack_ternary for {-a, 0, +a}")
    scales = _channel_values(np.abs(rows), np.ones_like(rows, dtype=bool), "magnitude")
    symbols = (rows > 0).astype(np.uint8)
    return PackedTensor(pack_bits(symbols, 1), tuple(w.shape), 1, _compact(scales))


def unpack_binary(packed: PackedTensor) -> torch.Tensor:
    """Exact inverse of :func:`pack_binary` (float32 tensor)."""
    channels = packed.shape[0]
    count = math.prod(packed.shape)
    bits = unpack_bits(packed.data, 1, count).reshape(channels, -1)
    scales = np.broadcast_to(packed.scales.reshape(-1, 1), (channels, 1)).astype(np.float32)
    rows = np.where(bits == 1, scales, -scales).astype(np.float32)
    return torch.from_numpy(rows.reshape(packed.shape).copy())


def pack_ternary(w: torch.Tensor) -> PackedTensor:
    """Pack ternary weights ``w[c] in {-n_c, 0, +p_c}`` into 2 bits per weight plus scales.

    Args:
        w: weights with at most one positive and one negative value per output channel.

    Example:
        >>> p = pack_ternary(torch.tensor([[0.3, 0.0, -0.1, 0.3]]))
        >>> len(p.data), p.scales.tolist()
        (1, [[0.30000001192092896, 0.10000000149011612]])
    """
    rows = _per_channel(w)
    pos = _channel_values(rows, rows > 0, "positive")
    neg = -_channel_values(rows, rows < 0, "negative")
    symbols = np.where(rows > 0, 1, np.where(rows < 0, 2, 0)).astype(np.uint8)
    scales = _compact(np.stack([pos, neg], axis=1).astype(np.float32))
    return PackedTensor(pack_bits(symbols, 2), tuple(w.shape), 2, scales)


def unpack_ternary(packed: PackedTensor) -> torch.Tensor:
    """Exact inverse of :func:`pack_ternary` (float32 tensor)."""
    channels = packed.shape[0]
    count = math.prod(packed.shape)
    symbols = unpack_bits(packed.data, 2, count).reshape(channels, -1)
    table = np.broadcast_to(packed.scales.reshape(-1, 2), (channels, 2)).astype(np.float32)
    rows = np.where(symbols == 1, table[:, :1], np.where(symbols == 2, -table[:, 1:], 0.0))
    return torch.from_numpy(rows.astype(np.float32).reshape(packed.shape).copy())
