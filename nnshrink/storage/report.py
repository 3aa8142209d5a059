"""Stored-bytes accounting in the style of Deep Compression (Han et al. 2016, Tables 2-5).

Per tensor: weights kept, bits per stored weight, bits per relative index, bytes spent on values,
positions and codebook, and the compression rate against the dense tensor; plus totals and the
real file size (the header and its JSON included).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from .container import BLOBS_KEY, read_header
from .dense import DTYPES

# Blob parts by what they store: values / positions / codebook (scales count as a codebook).
_VALUE_PARTS = ("values", "indices", "symbols")
_POSITION_PARTS = ("positions",)
_CODEBOOK_PARTS = ("codebook", "scales")


@dataclasses.dataclass(frozen=True)
class StorageRow:
    """Stored size of one tensor (or the total, ``name == "total"``).

    Attributes:
        name: state-dict name.
        kind: ``conv``, ``fc``, ``norm`` or ``other``.
        encoding: encoding name (``"mixed"`` for the total).
        numel: number of elements.
        nnz: non-zero elements (``-0.0`` counts as zero, NaN as non-zero).
        entries: stored entries (``nnz`` + filler zeros for sparse encodings, else ``numel``).
        kept: ``nnz / numel``.
        weight_bits: bits per stored value (values/indices/symbols stream over stored entries).
        index_bits: bits per relative index over stored entries (0 if not sparse).
        values_bytes: bytes of the values, codebook indices or sign symbols.
        positions_bytes: bytes of the relative positions.
        codebook_bytes: bytes of the codebook (or per-channel scales).
        stored_bytes: sum of the three.
        dense_bytes: the tensor stored densely in its own dtype (fp32 for usual weights).
        compression: ``dense_bytes / stored_bytes``.
    """

    name: str
    kind: str
    encoding: str
    numel: int
    nnz: int
    entries: int
    kept: float
    weight_bits: float
    index_bits: float
    values_bytes: int
    positions_bytes: int
    codebook_bytes: int
    stored_bytes: int
    dense_bytes: int
    compression: float


@dataclasses.dataclass(frozen=True)
class StorageReport:
    """Per-tensor rows, their total, and the real file size (when known).

    Attributes:
        rows: one :class:`StorageRow` per tensor, in file order.
        total: the sum over rows (bits are averages weighted by stored entries).
        file_bytes: size of the ``.nns`` file, header included (None for a bare header).
        dense_file_ratio: ``total.dense_bytes / file_bytes`` (None without a file size).
    """

    rows: list[StorageRow]
    total: StorageRow
    file_bytes: int | None
    dense_file_ratio: float | None

    def __iter__(self):
        return iter(self.rows)

    @property
    def overhead_bytes(self) -> int | None:
        """File bytes beyond the tensors' payload: the 24-byte prefix and the JSON header."""
        return None if self.file_bytes is None else self.file_bytes - self.total.stored_bytes

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: rows, total, ``file_bytes``, ``overhead_bytes``, ``dense_file_ratio``."""
        return {
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "total": dataclasses.asdict(self.total),
            "file_bytes": self.file_bytes,
            "overhead_bytes": self.overhead_bytes,
            "dense_file_ratio": self.dense_file_ratio,
        }


def _ratio(a: float, b: float) -> float:
    return float(a) / b if b else float("inf") if a else 1.0


def _row(name: str, entry: dict[str, Any], lengths: dict[str, int]) -> StorageRow:
    parts = {part: lengths[blob] for part, blob in entry["blobs"].items()}
    values = sum(parts.get(p, 0) for p in _VALUE_PARTS)
    positions = sum(parts.get(p, 0) for p in _POSITION_PARTS)
    codebook = sum(parts.get(p, 0) for p in _CODEBOOK_PARTS)
    numel, nnz = int(entry["numel"]), int(entry["nnz"])
    stored_entries = int(entry.get("entries", numel))
    dense = numel * DTYPES[entry["dtype"]].itemsize
    stored = values + positions + codebook
    return StorageRow(
        name=name,
        kind=entry.get("kind", "other"),
        encoding=entry["encoding"],
        numel=numel,
        nnz=nnz,
        entries=stored_entries,
        kept=_ratio(nnz, numel) if numel else 0.0,
        weight_bits=_ratio(8 * values, stored_entries) if stored_entries else 0.0,
        index_bits=_ratio(8 * positions, stored_entries) if positions else 0.0,
        values_bytes=values,
        positions_bytes=positions,
        codebook_bytes=codebook,
        stored_bytes=stored,
        dense_bytes=dense,
        compression=_ratio(dense, stored),
    )


def _total(rows: list[StorageRow]) -> StorageRow:
    def total(field: str) -> int:
        return sum(getattr(r, field) for r in rows)

    entries = total("entries")
    sparse_entries = sum(r.entries for r in rows if r.positions_bytes)
    stored, dense = total("stored_bytes"), total("dense_bytes")
    return StorageRow(
        name="total",
        kind="",
        encoding="mixed",
        numel=total("numel"),
        nnz=total("nnz"),
        entries=entries,
        kept=_ratio(total("nnz"), total("numel")) if rows else 0.0,
        weight_bits=_ratio(8 * total("values_bytes"), entries) if entries else 0.0,
        index_bits=_ratio(8 * total("positions_bytes"), sparse_entries) if sparse_entries else 0.0,
        values_bytes=total("values_bytes"),
        positions_bytes=total("positions_bytes"),
        codebook_bytes=total("codebook_bytes"),
        stored_bytes=stored,
        dense_bytes=dense,
        compression=_ratio(dense, stored),
    )


def storage_report(
    path_or_header: str | os.PathLike | dict[str, Any], *, file_bytes: int | None = None
) -> StorageReport:
    """Per-tensor stored-bytes accounting of a ``.nns`` file (or of its header with blob index).

    Args:
        path_or_header: a ``.nns`` path, or a header dict that still has its ``"blobs"`` index
            (``read_header(path, with_blob_index=True)``).
        file_bytes: file size to report when a header is given.

    Example:
        >>> report = storage_report("lenet300.nns")  # doctest: +SKIP
        >>> report.total.compression  # doctest: +SKIP
        40.1
    """
    if isinstance(path_or_header, dict):
        header = path_or_header
    else:
        header = read_header(path_or_header, with_blob_index=True)
        file_bytes = Path(path_or_header).stat().st_size
    if BLOBS_KEY not in header:
        raise ValueError(
            "the header has no blob index; use read_header(path, with_blob_index=True)"
        )
    lengths = {name: int(e["length"]) for name, e in header[BLOBS_KEY].items()}
    rows = [_row(name, entry, lengths) for name, entry in header["tensors"].items()]
    tot = _total(rows)
    ratio = _ratio(tot.dense_bytes, file_bytes) if file_bytes else None
    return StorageReport(rows=rows, total=tot, file_bytes=file_bytes, dense_file_ratio=ratio)
