"""Dense codec: a tensor's values as raw little-endian bytes, optionally cast to fp16.

Also holds the dtype table shared by the other codecs: every dtype is named by a string in the
header, and floating-point values are compared by their *bit patterns* (so NaN payloads and, except
in sparse encodings, ``-0.0`` survive a round trip).
"""

from __future__ import annotations

import numpy as np

# dtype name (as written in headers) -> little-endian numpy dtype holding the raw values.
# bfloat16 has no numpy dtype: it travels as its raw uint16 bit pattern.
DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}
_BITS_VIEW = {8: np.dtype("<u8"), 4: np.dtype("<u4"), 2: np.dtype("<u2"), 1: np.dtype("u1")}


def numpy_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype used to store values of dtype ``name``."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unsupported dtype {name!r}; supported: {sorted(DTYPES)}") from None


def bit_view(values: np.ndarray) -> np.ndarray:
    """View an array as unsigned integers of the same width (its raw bit patterns)."""
    values = np.ascontiguousarray(values)
    return values.view(_BITS_VIEW[values.dtype.itemsize])


def nonzero_mask(values: np.ndarray) -> np.ndarray:
    """True where a value is not zero; for floats both ``+0.0`` and ``-0.0`` count as zero.

    Sparse encodings therefore restore ``-0.0`` as ``+0.0`` (equal values: ``torch.equal``
    holds); stripping weight sharing or masking by multiplication produces such negative zeros.
    NaN counts as non-zero. bfloat16 arrives as raw integers, so only its ``+0.0`` is zero.
    """
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return values != 0
    return bit_view(values) != 0


def fp16_exact(values: np.ndarray) -> bool:
    """True when every float32 value converts to float16 and back bit for bit."""
    values = np.asarray(values)
    back = values.astype(np.float16).astype(values.dtype)
    return bool(np.array_equal(bit_view(back), bit_view(values)))


def encode_dense(values: np.ndarray, dtype: str) -> bytes:
    """Encode an array as raw little-endian ``dtype`` values (``float16`` casts floats).

    Args:
        values: any array whose values fit ``dtype``.
        dtype: a name from :data:`DTYPES`.

    Example:
        >>> encode_dense(np.array([1.0, -2.0], np.float32), "float16").hex()
        '003c00c0'
    """
    target = numpy_dtype(dtype)
    return np.ascontiguousarray(np.asarray(values).reshape(-1), dtype=target).tobytes()


def decode_dense(data: bytes | memoryview, dtype: str, count: int) -> np.ndarray:
    """Inverse of :func:`encode_dense`: ``count`` values of ``dtype`` (a 1-D, writable array)."""
    target = numpy_dtype(dtype)
    if type(count) is not int or count < 0:
        raise ValueError(f"dense count must be an integer >= 0, got {count!r}")
    if len(data) != count * target.itemsize:
        raise ValueError(
            f"dense blob holds {len(data)} bytes, expected {count} x {target.itemsize} ({dtype})"
        )
    return np.frombuffer(data, dtype=target, count=count).copy()
