"""The ``.nns`` container: magic, version, a CRC-checked JSON header, then named CRC-checked blobs.

Byte layout (all integers little-endian; see ``docs/file-format.md``)::

    offset  size  field
    0       8     magic  b"NNSHRINK"
    8       4     format version, uint32 (currently 2; version 1 files have the same layout)
    12      8     header length H, uint64
    20      4     CRC32 of the header bytes, uint32 (zlib.crc32)
    24      H     header: UTF-8 JSON object; its "blobs" key maps blob name ->
                  {"offset", "length", "crc32"}, offsets relative to the data region
    24+H    ...   data region: the blobs back to back, in header order, no padding

The file ends exactly at the end of the last blob. Readers check everything (magic, version,
lengths, every CRC) before returning, so a damaged file never yields half a model.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnshrink.utils.atomic import atomic_write_bytes

MAGIC = b"NNSHRINK"
FORMAT_VERSION = 2  # 2: architecture records may name factories, hf directories, attributes
PREFIX = struct.Struct("<8sIQI")  # magic, version, header length, header crc32
PREFIX_SIZE = PREFIX.size  # 24
BLOBS_KEY = "blobs"
MAX_HEADER_BYTES = 256 * 1024 * 1024  # a larger length field can only come from corruption


class FormatError(ValueError):
    """A ``.nns`` file is truncated, corrupted, of another format or of a newer version."""


def encode_container(header: Mapping[str, Any], blobs: Mapping[str, bytes]) -> bytes:
    """Serialize a JSON-able ``header`` and named ``blobs`` into ``.nns`` container bytes.

    Args:
        header: JSON-serialisable mapping; the key ``"blobs"`` is reserved (filled in here).
        blobs: blob name -> bytes, stored in this order.

    Example:
        >>> data = encode_container({"note": "hi"}, {"a": b"xyz"})
        >>> bytes(decode_container(data)[1]["a"])
        b'xyz'
    """
    if BLOBS_KEY in header:
        raise ValueError(f"header key {BLOBS_KEY!r} is reserved for the blob index; rename it")
    index: dict[str, dict[str, int]] = {}
    offset = 0
    for name, blob in blobs.items():
        if not isinstance(name, str):
            raise TypeError(f"blob names must be str, got {type(name).__name__}")
        length = len(blob)
        index[name] = {"offset": offset, "length": length, "crc32": zlib.crc32(blob)}
        offset += length
    full = dict(header)
    full[BLOBS_KEY] = index
    try:
        head = json.dumps(full, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"the header is not plain JSON ({exc}); metrics and metadata may hold only strings, "
            "finite numbers, booleans, None, lists and dicts"
        ) from exc
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, len(head), zlib.crc32(head))
    return b"".join([prefix, head, *(bytes(b) for b in blobs.values())])


def write_container(
    path: str | os.PathLike, header: Mapping[str, Any], blobs: Mapping[str, bytes]
) -> int:
    """Atomically write a container file (temp file in the same directory, fsync, rename).

    Returns:
        The number of bytes written.
    """
    data = encode_container(header, blobs)
    atomic_write_bytes(path, data)
    return len(data)


def _parse_prefix(data: bytes | memoryview, where: str) -> tuple[int, int, int]:
    if len(data) < len(MAGIC) and MAGIC.startswith(bytes(data)):
        raise FormatError(
            f"{where} is truncated: {len(data)} bytes, shorter than the magic bytes; "
            "the file was cut off (re-copy or re-save it)"
        )
    if len(data) < len(MAGIC) or bytes(data[: len(MAGIC)]) != MAGIC:
        raise FormatError(
            f"{where} is not an nnshrink .nns file (magic bytes {bytes(data[:8])!r}, expected "
            f"{MAGIC!r}); pass a file written by nnshrink.storage.save"
        )
    if len(data) < PREFIX_SIZE:
        raise FormatError(
            f"{where} is truncated: {len(data)} bytes, shorter than the {PREFIX_SIZE}-byte "
            "prefix; the file was cut off (re-copy or re-save it)"
        )
    _, version, head_len, head_crc = PREFIX.unpack_from(data, 0)
    if version > FORMAT_VERSION:
        raise FormatError(
            f"{where} has format version {version}, newer than the {FORMAT_VERSION} this "
            "nnshrink reads; upgrade nnshrink to load it"
        )
    if version < 1:
        raise FormatError(f"{where} has invalid format version {version}; the file is corrupted")
    if head_len > MAX_HEADER_BYTES:
        raise FormatError(
            f"{where} declares a {head_len}-byte header, larger than any valid file; "
            "the file is corrupted (re-save it)"
        )
    return version, head_len, head_crc


def _no_constant(name: str) -> None:
    # Writers never emit NaN/Infinity (allow_nan=False); a header holding them is crafted.
    raise ValueError(f"non-finite number {name} in the header")


def _parse_header(data: bytes | memoryview, size: int, where: str) -> tuple[dict[str, Any], int]:
    """Parse prefix and header from ``data``; ``size`` is the whole file's length."""
    _, head_len, head_crc = _parse_prefix(data, where)
    end = PREFIX_SIZE + head_len
    if size < end:
        raise FormatError(
            f"{where} is truncated inside the header ({size} of at least {end} bytes); "
            "the file was cut off (re-copy or re-save it)"
        )
    head = bytes(data[PREFIX_SIZE:end])
    if zlib.crc32(head) != head_crc:
        raise FormatError(f"{where}: header CRC32 mismatch; the file is corrupted (re-save it)")
    try:
        header = json.loads(head.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # incl. crafted nesting
        raise FormatError(f"{where}: header is not valid UTF-8 JSON ({str(exc)[:120]})") from None
    if not isinstance(header, dict) or not isinstance(header.get(BLOBS_KEY), dict):
        raise FormatError(f"{where}: header lacks the {BLOBS_KEY!r} index; the file is corrupted")
    expected = 0
    for name, entry in header[BLOBS_KEY].items():
        fields = (
            [entry.get(k) for k in ("offset", "length", "crc32")] if isinstance(entry, dict) else []
        )
        if (
            len(fields) != 3
            or not all(type(v) is int and v >= 0 for v in fields)
            or fields[2] >> 32
        ):
            raise FormatError(f"{where}: blob {name!r:.80} has a malformed index entry")
        offset, length = fields[0], fields[1]
        if offset != expected:
            raise FormatError(
                f"{where}: blob {name!r} is at offset {offset}, expected {expected}; "
                "the file is corrupted"
            )
        expected += length
    total = end + expected
    if size < total:
        raise FormatError(
            f"{where} is truncated: {size} bytes, the header promises {total}; "
            "the file was cut off (re-copy or re-save it)"
        )
    if size > total:
        raise FormatError(
            f"{where} has {size - total} unexpected trailing bytes after the last blob; "
            "the file is corrupted or was appended to"
        )
    return header, end


def decode_container(
    data: bytes | memoryview, where: str = "data"
) -> tuple[dict[str, Any], dict[str, memoryview]]:
    """Parse and fully verify container bytes; return ``(header, {name: blob})``.

    The returned header does not contain the ``"blobs"`` index. Raises :class:`FormatError`
    on wrong magic, newer version, truncation, trailing bytes or any CRC mismatch.
    """
    view = memoryview(data)
    header, start = _parse_header(view, len(view), where)
    blobs: dict[str, memoryview] = {}
    for name, entry in header.pop(BLOBS_KEY).items():
        lo = start + int(entry["offset"])
        blob = view[lo : lo + int(entry["length"])]
        if zlib.crc32(blob) != int(entry["crc32"]):
            raise FormatError(
                f"{where}: CRC32 mismatch in blob {name!r}; the file is corrupted (re-save it)"
            )
        blobs[name] = blob
    return header, blobs


def read_container(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, memoryview]]:
    """Read and verify a container file; see :func:`decode_container`."""
    return decode_container(Path(path).read_bytes(), where=str(path))


def read_header(path: str | os.PathLike, *, with_blob_index: bool = False) -> dict[str, Any]:
    """Read only the header of a container (checks magic, version, header CRC and file length).

    Args:
        path: the ``.nns`` file.
        with_blob_index: keep the ``"blobs"`` index (name -> offset, length, crc32).
    """
    where = str(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(PREFIX_SIZE)
        _, head_len, _ = _parse_prefix(prefix, where)
        head = f.read(min(head_len, max(size - PREFIX_SIZE, 0)))
    header, _ = _parse_header(prefix + head, size, where)
    if not with_blob_index:
        header.pop(BLOBS_KEY)
    return header


def is_nns_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an existing file starting with the ``.nns`` magic bytes.

    Example:
        >>> is_nns_file("/nonexistent.nns")
        False
    """
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
