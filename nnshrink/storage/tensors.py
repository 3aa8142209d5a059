"""Per-tensor encoding: pick the smallest exact encoding of one array and turn it into blobs.

Encodings (the ``"encoding"`` field of a tensor entry in the header):

* ``dense``: all values, raw (``values`` blob).
* ``sparse``: relative positions of the non-zeros (``positions``) + their raw values (``values``).
* ``codebook``: distinct values (``codebook``) + an index per element (``indices``).
* ``sparse_codebook``: ``positions`` + ``codebook`` + an index per stored entry (``indices``).
* ``binary`` / ``ternary``: 1- or 2-bit symbols per element (``symbols``) + per-channel ``scales``.
* ``nm``: N:M semi-structured weights (2:4, ...): ``N`` values per group of ``M`` (``values``) and
  their positions in the group (``positions``); see :mod:`nnshrink.storage.nm`.

Index and position streams are either fixed-width bit-packed (``"packed"``) or canonical-Huffman
coded (``"huffman"``), whichever is smaller. ``"auto"`` computes the exact size of every encoding
that applies (without encoding) and keeps the smallest. Every choice reproduces the values
exactly unless ``value_dtype="float16"`` is forced; sparse and sign encodings store ``-0.0`` as
``+0.0`` (equal values), dense and codebook encodings keep every bit.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from nnshrink.storage.packbits import (
    PackedTensor,
    pack_binary,
    pack_bits,
    pack_ternary,
    unpack_binary,
    unpack_bits,
    unpack_ternary,
)

from .codebook import build_codebook, codebook_bits, decode_codebook, distinct_bits
from .dense import DTYPES, decode_dense, encode_dense, fp16_exact, nonzero_mask
from .huffman import huffman_bits, huffman_decode, huffman_encode
from .nm import candidates as nm_candidates
from .nm import decode_nm, encode_positions, nm_nbytes, nm_split
from .sparse import entry_positions, relative_indices, sparse_join

ENCODINGS = ("dense", "sparse", "codebook", "sparse_codebook", "binary", "ternary", "nm")
VALUE_DTYPES = ("auto", "float32", "float16")
MAX_BITS = 8  # widest codebook index / relative index (the packer's limit, and the paper's)


@dataclasses.dataclass(frozen=True)
class TensorOptions:
    """How to encode one tensor.

    Args:
        encoding: ``"auto"`` (smallest exact) or one of :data:`ENCODINGS`.
        bits: smallest codebook index width to use; ``None`` = the fewest bits that hold the
            codebook. Widened (up to 8) when the codebook needs more, e.g. for the fillers' zero.
        index_bits: relative-index width ``k`` for sparse encodings (1..8) or ``"auto"``.
        huffman: allow Huffman coding of index/position streams (used where smaller).
        value_dtype: how float32 values/codebooks are stored: ``"auto"`` = float16 when that is
            exact, ``"float32"``, or ``"float16"`` (forced, lossy).
    """

    encoding: str = "auto"
    bits: int | None = None
    index_bits: int | str = 5
    huffman: bool = True
    value_dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.encoding != "auto" and self.encoding not in ENCODINGS:
            raise ValueError(
                f"unknown encoding {self.encoding!r}; use 'auto' or one of {ENCODINGS}"
            )
        if self.bits is not None and not 1 <= self.bits <= MAX_BITS:
            raise ValueError(f"bits must be in 1..{MAX_BITS} or None, got {self.bits}")
        if self.index_bits != "auto" and not (
            isinstance(self.index_bits, int) and 1 <= self.index_bits <= MAX_BITS
        ):
            raise ValueError(
                f"index_bits must be in 1..{MAX_BITS} or 'auto', got {self.index_bits}"
            )
        if self.value_dtype not in VALUE_DTYPES:
            raise ValueError(f"value_dtype must be one of {VALUE_DTYPES}, got {self.value_dtype!r}")


@dataclasses.dataclass
class _Plan:
    """One candidate encoding: its exact size and how to produce its fields and blobs."""

    encoding: str
    nbytes: int
    build: Callable[[], tuple[dict[str, Any], dict[str, bytes]]]


def _stream_plan(symbols: np.ndarray, bits: int, huffman: bool) -> tuple[str, int]:
    """Coding (``packed``/``huffman``) and byte size of a symbol stream of width ``bits``."""
    packed = math.ceil(symbols.size * bits / 8)
    if huffman and symbols.size:
        freqs = np.bincount(symbols, minlength=1 << bits)
        coded = (1 << bits) + math.ceil(huffman_bits(freqs) / 8)
        if coded < packed:
            return "huffman", coded
    return "packed", packed


def encode_stream(symbols: np.ndarray, bits: int, coding: str) -> bytes:
    """Encode symbols ``< 2**bits`` as ``packed`` (fixed width) or ``huffman``."""
    if coding == "huffman":
        return huffman_encode(symbols, 1 << bits)
    return pack_bits(symbols, bits)


def decode_stream(data: bytes | memoryview, bits: int, coding: str, count: int) -> np.ndarray:
    """Inverse of :func:`encode_stream` (int64 symbols)."""
    if coding == "huffman":
        return huffman_decode(data, 1 << bits, count)
    if coding == "packed":
        if len(data) != math.ceil(count * bits / 8):
            raise ValueError(f"packed stream of {count} x {bits} bits has {len(data)} bytes")
        return unpack_bits(data, bits, count).astype(np.int64)
    raise ValueError(f"unknown stream coding {coding!r}")


def _value_dtype(values: np.ndarray, dtype: str, mode: str) -> str:
    if dtype != "float32" or mode == "float32":
        return dtype
    if mode == "float16" or fp16_exact(values):
        return "float16"
    return dtype


def _dense_plan(flat: np.ndarray, dtype: str, opts: TensorOptions) -> _Plan:
    vd = _value_dtype(flat, dtype, opts.value_dtype)

    def build():
        return {"value_dtype": vd}, {"values": encode_dense(flat, vd)}

    return _Plan("dense", flat.size * DTYPES[vd].itemsize, build)


def _few_distinct(values: np.ndarray, limit: int) -> bool:
    """Whether ``values`` has at most ``limit`` distinct bit patterns (a prefix rejects early)."""
    flat = np.ascontiguousarray(values).reshape(-1)
    head = flat[: 64 * limit]  # dense float weights already fail here, for a fraction of the cost
    if head.size < flat.size and distinct_bits(head).size > limit:
        return False
    return distinct_bits(flat).size <= limit


def _codebook_plan(
    encoding: str,
    values: np.ndarray,
    dtype: str,
    opts: TensorOptions,
    extra_fields: dict[str, Any] | None = None,
    extra_blobs: dict[str, Callable[[], bytes]] | None = None,
    extra_bytes: int = 0,
) -> _Plan | None:
    """Codebook of ``values`` (all elements, or the sparse entries), or None if it does not fit.

    ``extra_*`` carry the sparse positions stream for ``sparse_codebook``.
    """
    if not _few_distinct(values, 1 << MAX_BITS):
        return None
    codebook, indices = build_codebook(values)
    # ``bits`` is a floor: a codebook that also needs the fillers' zero may need one bit more.
    width = max(opts.bits or 1, codebook_bits(codebook.size))
    if width > MAX_BITS:
        return None
    indices = indices.reshape(-1)
    vd = _value_dtype(codebook, dtype, opts.value_dtype)
    coding, idx_bytes = _stream_plan(indices, width, opts.huffman)

    def build():
        fields = dict(extra_fields or {})
        fields.update(
            bits=width, indices_coding=coding, codebook_size=int(codebook.size), value_dtype=vd
        )
        blobs = {name: make() for name, make in (extra_blobs or {}).items()}
        blobs["codebook"] = encode_dense(codebook, vd)
        blobs["indices"] = encode_stream(indices, width, coding)
        return fields, blobs

    size = extra_bytes + idx_bytes + codebook.size * DTYPES[vd].itemsize
    return _Plan(encoding, size, build)


def _sparse_plans(
    flat: np.ndarray, dtype: str, opts: TensorOptions, positions: np.ndarray
) -> list[_Plan]:
    ks = range(1, MAX_BITS + 1) if opts.index_bits == "auto" else [int(opts.index_bits)]
    best: dict[str, _Plan] = {}
    for k in ks:
        skips, is_real = relative_indices(positions, k)
        values = flat[entry_positions(skips)]
        values[~is_real] = 0  # as sparse_split: fillers store +0
        pos_coding, pos_bytes = _stream_plan(skips, k, opts.huffman)
        common = {"index_bits": k, "entries": int(skips.size), "positions_coding": pos_coding}

        def positions_blob(skips=skips, k=k, coding=pos_coding):
            return encode_stream(skips, k, coding)

        vd = _value_dtype(values, dtype, opts.value_dtype)

        def build(common=common, values=values, vd=vd, positions_blob=positions_blob):
            fields = dict(common, value_dtype=vd)
            return fields, {"positions": positions_blob(), "values": encode_dense(values, vd)}

        plans = [_Plan("sparse", pos_bytes + values.size * DTYPES[vd].itemsize, build)]
        cb = _codebook_plan(
            "sparse_codebook", values, dtype, opts, common, {"positions": positions_blob}, pos_bytes
        )
        if cb is not None:
            plans.append(cb)
        for plan in plans:
            if plan.encoding not in best or plan.nbytes < best[plan.encoding].nbytes:
                best[plan.encoding] = plan
    return list(best.values())


def _sign_plan(encoding: str, array: np.ndarray) -> _Plan | None:
    """Binary/ternary packing, only where it reproduces the tensor bit for bit."""
    if array.dtype != np.float32 or array.ndim == 0 or array.size == 0:
        return None
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    pack, unpack = (
        (pack_binary, unpack_binary) if encoding == "binary" else (pack_ternary, unpack_ternary)
    )
    try:
        packed = pack(tensor)
    except ValueError:
        return None
    back = unpack(packed).numpy()
    if not np.array_equal(back, array):
        return None  # NaN or inf do not survive sign packing (-0.0 becomes 0.0, as in sparse)
    scales = np.ascontiguousarray(packed.scales, dtype="<f4")

    def build():
        fields = {"scales_shape": list(scales.shape)}
        return fields, {"symbols": packed.data, "scales": scales.tobytes()}

    return _Plan(encoding, packed.nbytes, build)


def _nm_plans(array: np.ndarray, dtype: str, opts: TensorOptions) -> list[_Plan]:
    """One plan per N:M layout the tensor fits (see :mod:`nnshrink.storage.nm`)."""
    plans = []
    for n, m, transposed in nm_candidates(np.asarray(array)):
        values, positions = nm_split(np.asarray(array), n, m, transposed)
        vd = _value_dtype(values, dtype, opts.value_dtype)

        def build(n=n, m=m, transposed=transposed, values=values, positions=positions, vd=vd):
            fields = {"n": n, "m": m, "transposed": transposed, "entries": int(values.size)}
            fields["value_dtype"] = vd
            blobs = {
                "values": encode_dense(values, vd),
                "positions": encode_positions(positions, m),
            }
            return fields, blobs

        plans.append(_Plan("nm", nm_nbytes(array.size, n, m, DTYPES[vd].itemsize), build))
    return plans


def plan_tensor(array: np.ndarray, dtype: str, opts: TensorOptions) -> list[_Plan]:
    """All applicable encodings of ``array`` (raw values of header dtype ``dtype``) with sizes."""
    flat = np.ascontiguousarray(array).reshape(-1)
    wanted = ENCODINGS if opts.encoding == "auto" else (opts.encoding,)
    plans: list[_Plan] = []
    if "dense" in wanted:
        plans.append(_dense_plan(flat, dtype, opts))
    if "codebook" in wanted:
        plan = _codebook_plan("codebook", flat, dtype, opts, {}, {})
        if plan is not None:
            plans.append(plan)
    if {"sparse", "sparse_codebook"} & set(wanted):
        positions = np.flatnonzero(nonzero_mask(flat))
        plans += [p for p in _sparse_plans(flat, dtype, opts, positions) if p.encoding in wanted]
    for encoding in ("binary", "ternary"):
        if encoding in wanted:
            plan = _sign_plan(encoding, np.asarray(array))
            if plan is not None:
                plans.append(plan)
    if "nm" in wanted:
        plans += _nm_plans(array, dtype, opts)
    return plans


def encode_tensor(
    array: np.ndarray, dtype: str, opts: TensorOptions
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Encode one array; returns the header fields and the named blobs (without tensor prefix).

    Args:
        array: the tensor's values as numpy (bfloat16 as its raw uint16 bit patterns).
        dtype: the tensor's dtype name (a key of :data:`nnshrink.storage.dense.DTYPES`).
        opts: the encoding options.

    Example:
        >>> fields, blobs = encode_tensor(np.zeros((4, 4), np.float32), "float32", TensorOptions())
        >>> fields["encoding"], sum(map(len, blobs.values()))
        ('sparse', 0)
    """
    plans = plan_tensor(array, dtype, opts)
    if not plans:
        raise ValueError(
            f"encoding {opts.encoding!r} does not apply (more than {1 << MAX_BITS} distinct values "
            "for a codebook, not an exactly binary/ternary float32 tensor, or not N:M sparse); "
            "use 'auto'"
        )
    best = min(plans, key=lambda p: p.nbytes)  # first of equals: the simpler encoding
    fields, blobs = best.build()
    nnz = int(nonzero_mask(np.ascontiguousarray(array).reshape(-1)).sum())
    head = {
        "shape": list(np.shape(array)),
        "dtype": dtype,
        "encoding": best.encoding,
        "numel": int(np.size(array)),
        "nnz": nnz,
    }
    head.update(fields)
    return head, blobs


def decode_tensor(entry: dict[str, Any], blobs: dict[str, bytes | memoryview]) -> np.ndarray:
    """Inverse of :func:`encode_tensor`: rebuild the raw array from header fields and blobs."""
    dtype = entry["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}")
    shape = tuple(int(s) for s in entry["shape"])
    numel = math.prod(shape)
    if numel != int(entry["numel"]):
        raise ValueError(f"shape {shape} does not hold numel={entry['numel']}")
    target = DTYPES[dtype]
    encoding = entry["encoding"]
    if encoding == "dense":
        flat = decode_dense(blobs["values"], entry["value_dtype"], numel).astype(target)
    elif encoding in ("sparse", "sparse_codebook"):
        k, entries = int(entry["index_bits"]), int(entry["entries"])
        skips = decode_stream(blobs["positions"], k, entry["positions_coding"], entries)
        if encoding == "sparse":
            values = decode_dense(blobs["values"], entry["value_dtype"], entries)
        else:
            values = _decode_codebook(entry, blobs, entries)
        flat = sparse_join(skips, values.astype(target), numel)
    elif encoding == "codebook":
        flat = _decode_codebook(entry, blobs, numel).astype(target)
    elif encoding in ("binary", "ternary"):
        if dtype != "float32":
            raise ValueError(f"{encoding} tensors must be float32, not {dtype}")
        scales_shape = tuple(int(s) for s in entry["scales_shape"])
        scales = decode_dense(blobs["scales"], "float32", math.prod(scales_shape))
        packed = PackedTensor(
            bytes(blobs["symbols"]),
            shape,
            1 if encoding == "binary" else 2,
            scales.reshape(scales_shape),
        )
        unpack = unpack_binary if encoding == "binary" else unpack_ternary
        flat = unpack(packed).numpy().reshape(-1)
    elif encoding == "nm":
        flat = decode_nm(shape, entry, blobs, target).reshape(-1)
    else:
        raise ValueError(f"unknown encoding {encoding!r}; this file needs a newer nnshrink")
    return flat.reshape(shape)


def _decode_codebook(entry: dict[str, Any], blobs: dict, count: int) -> np.ndarray:
    codebook = decode_dense(blobs["codebook"], entry["value_dtype"], int(entry["codebook_size"]))
    indices = decode_stream(blobs["indices"], int(entry["bits"]), entry["indices_coding"], count)
    return decode_codebook(codebook, indices)
