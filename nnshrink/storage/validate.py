"""Check a ``.nns`` tensor entry against its blobs before decoding a byte.

Every header field a decoder reads is type- and range-checked here, and every blob length must
be exactly what the fields imply (or, for Huffman streams, able to hold the symbol count). The
decoded size of a tensor is returned so that the reader can refuse a file whose tensors would
take more memory than the file justifies (:func:`nnshrink.io.budget_for`) before it allocates.
A crafted ``index_bits: 0``, a sparse entry claiming ``10**12`` elements from a 200-byte blob or
a dtype the header does not know all end here as a ``ValueError`` naming the field.

Encodings are checked by the function registered for them in :data:`CHECKS`, and an entry of
such an encoding may hold only the common fields and that encoding's own (:data:`FIELDS`): a
stray field is refused too, so every byte of a header means something. An encoding without a
check (added by a newer codec) gets the generic checks only (shape, dtype, blob names) and its
decoder must validate the rest; register one with :func:`register_check`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from .dense import DTYPES

MAX_NDIM = 32
MAX_WIDTH = 8  # relative-index and codebook-index widths (the packer's limit)
KINDS = ("conv", "fc", "norm", "other")
COMMON_FIELDS = frozenset({"shape", "dtype", "encoding", "numel", "nnz", "kind", "blobs"})
_SPARSE = {"index_bits", "entries", "positions_coding", "value_dtype"}
_CODEBOOK = {"bits", "indices_coding", "codebook_size", "value_dtype"}
Check = Callable[[dict[str, Any], dict[str, int], int, str, str], set[str]]
CHECKS: dict[str, Check] = {}
FIELDS: dict[str, frozenset[str]] = {}


def register_check(encoding: str, fields: set[str]) -> Callable[[Check], Check]:
    """Register ``fn(entry, part_lengths, numel, dtype, where) -> expected part names`` and the
    fields (beyond :data:`COMMON_FIELDS`) an entry of ``encoding`` may hold."""

    def decorator(fn: Check) -> Check:
        CHECKS[encoding] = fn
        FIELDS[encoding] = COMMON_FIELDS | frozenset(fields)
        return fn

    return decorator


def _int(entry: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    value = entry.get(key)
    if type(value) is not int or not lo <= value <= hi:
        raise ValueError(f"{where}: {key!r} must be an integer in [{lo}, {hi}], got {value!r:.40}")
    return value


def _value_size(entry: dict[str, Any], dtype: str, where: str) -> int:
    vd = entry.get("value_dtype")
    if vd != dtype and not (dtype == "float32" and vd == "float16"):
        raise ValueError(f"{where}: value_dtype {vd!r:.40} cannot hold {dtype} values")
    return DTYPES[vd].itemsize


def _length(lengths: dict[str, int], part: str, expected: int, where: str) -> None:
    if lengths.get(part) != expected:
        raise ValueError(
            f"{where}: blob {part!r} holds {lengths.get(part)} bytes, expected {expected}"
        )


def _stream(entry, lengths, part: str, coding_key: str, count: int, bits: int, where: str) -> None:
    coding = entry.get(coding_key)
    length = lengths.get(part, -1)
    if coding == "packed":
        _length(lengths, part, math.ceil(count * bits / 8), where)
    elif coding == "huffman":
        table = 1 << bits
        if length < table or count > 8 * (length - table):  # every code takes >= 1 bit
            raise ValueError(
                f"{where}: Huffman blob {part!r} of {length} bytes cannot hold {count} symbols"
            )
    else:
        raise ValueError(f"{where}: {coding_key} must be 'packed' or 'huffman', got {coding!r:.40}")


def _sparse_fields(entry, lengths, numel: int, where: str) -> int:
    k = _int(entry, "index_bits", 1, MAX_WIDTH, where)
    entries = _int(entry, "entries", 0, numel, where)  # each entry sits at its own position
    _stream(entry, lengths, "positions", "positions_coding", entries, k, where)
    return entries


def _codebook_fields(entry, lengths, count: int, dtype: str, where: str) -> None:
    bits = _int(entry, "bits", 1, MAX_WIDTH, where)
    size = _int(entry, "codebook_size", 1 if count else 0, 1 << bits, where)
    _length(lengths, "codebook", size * _value_size(entry, dtype, where), where)
    _stream(entry, lengths, "indices", "indices_coding", count, bits, where)


@register_check("dense", {"value_dtype"})
def _dense(entry, lengths, numel, dtype, where):
    _length(lengths, "values", numel * _value_size(entry, dtype, where), where)
    return {"values"}


@register_check("sparse", _SPARSE)
def _sparse(entry, lengths, numel, dtype, where):
    entries = _sparse_fields(entry, lengths, numel, where)
    _length(lengths, "values", entries * _value_size(entry, dtype, where), where)
    return {"positions", "values"}


@register_check("codebook", _CODEBOOK)
def _codebook(entry, lengths, numel, dtype, where):
    _codebook_fields(entry, lengths, numel, dtype, where)
    return {"codebook", "indices"}


@register_check("sparse_codebook", _SPARSE | _CODEBOOK)
def _sparse_codebook(entry, lengths, numel, dtype, where):
    entries = _sparse_fields(entry, lengths, numel, where)
    _codebook_fields(entry, lengths, entries, dtype, where)
    return {"positions", "codebook", "indices"}


def _sign(bits: int, cols: int) -> Check:
    def check(entry, lengths, numel, dtype, where):
        shape = entry["shape"]
        if dtype != "float32" or not shape or shape[0] < 1 or numel < 1:
            raise ValueError(f"{where}: {entry['encoding']} tensors are non-empty float32")
        scales = entry.get("scales_shape")
        rows = scales[0] if isinstance(scales, list) and scales else None
        expected = [rows] if cols == 1 else [rows, 2]
        exact = isinstance(scales, list) and all(type(s) is int for s in scales)
        if not exact or scales != expected or rows not in (1, shape[0]):
            raise ValueError(f"{where}: scales_shape {scales!r:.40} does not fit shape {shape}")
        _length(lengths, "scales", rows * cols * 4, where)
        _length(lengths, "symbols", math.ceil(numel * bits / 8), where)
        return {"symbols", "scales"}

    return check


register_check("binary", {"scales_shape"})(_sign(1, 1))
register_check("ternary", {"scales_shape"})(_sign(2, 2))


def check_entry(name: str, entry: Any, blob_lengths: Mapping[str, int]) -> int:
    """Validate one tensor entry against the container's blob lengths; return its decoded bytes.

    Args:
        name: the tensor's state-dict name (for messages).
        entry: the header's tensor entry.
        blob_lengths: container blob name -> length in bytes.

    Raises:
        ValueError: the first field that is missing, of the wrong type or out of range.

    Example:
        >>> entry = {"shape": [2], "dtype": "float32", "numel": 2, "encoding": "dense",
        ...          "value_dtype": "float32", "blobs": {"values": "w/values"}}
        >>> check_entry("w", entry, {"w/values": 8})
        8
    """
    where = f"tensor {name!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: the entry is not an object")
    dtype = entry.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"{where}: unsupported dtype {dtype!r:.40}; supported: {sorted(DTYPES)}")
    shape = entry.get("shape")
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_NDIM
        and all(type(s) is int and s >= 0 for s in shape)
    ):
        raise ValueError(f"{where}: shape must be a list of at most {MAX_NDIM} integers >= 0")
    numel = math.prod(shape)
    if entry.get("numel") != numel or type(entry.get("numel")) is not int:
        raise ValueError(f"{where}: numel {entry.get('numel')!r:.40} != product of shape {shape}")
    if "nnz" in entry:
        _int(entry, "nnz", 0, numel, where)
    if "kind" in entry and entry["kind"] not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, got {entry['kind']!r:.40}")
    parts = entry.get("blobs")
    if not isinstance(parts, dict) or not all(
        isinstance(b, str) and b in blob_lengths for b in parts.values()
    ):
        raise ValueError(f"{where}: 'blobs' must map parts to blobs the container holds")
    encoding = entry.get("encoding")
    if not isinstance(encoding, str):
        raise ValueError(f"{where}: encoding must be a string, got {encoding!r:.40}")
    check = CHECKS.get(encoding)
    if check is not None:
        stray = sorted(set(entry) - FIELDS[encoding])
        if stray:
            raise ValueError(f"{where}: fields {stray[:5]} do not belong to a {encoding} entry")
        lengths = {part: blob_lengths[blob] for part, blob in parts.items()}
        expected = check(entry, lengths, numel, dtype, where)
        if set(parts) != expected:
            raise ValueError(
                f"{where}: {encoding} needs parts {sorted(expected)}, got {sorted(parts)}"
            )
    return numel * DTYPES[dtype].itemsize
