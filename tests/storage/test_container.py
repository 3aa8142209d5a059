"""Container: layout, exact round trip, and a clear FormatError for every kind of damage."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from nnshrink.storage.container import (
    FORMAT_VERSION,
    MAGIC,
    PREFIX_SIZE,
    FormatError,
    decode_container,
    encode_container,
    is_nns_file,
    read_container,
    read_header,
    write_container,
)

HEADER = {"note": "tiny", "numbers": [1, 2.5]}
BLOBS = {"a/values": b"\x01\x02\x03", "empty": b"", "b": bytes(range(256)) * 3}


def _file(tmp_path):
    path = tmp_path / "x.nns"
    write_container(path, HEADER, BLOBS)
    return path


def test_roundtrip_and_layout(tmp_path):
    path = _file(tmp_path)
    data = path.read_bytes()
    magic, version, head_len, head_crc = struct.unpack_from("<8sIQI", data)
    assert (magic, version) == (MAGIC, FORMAT_VERSION)
    head = data[PREFIX_SIZE : PREFIX_SIZE + head_len]
    assert zlib.crc32(head) == head_crc
    index = json.loads(head)["blobs"]
    assert list(index) == list(BLOBS)
    start = PREFIX_SIZE + head_len
    for name, blob in BLOBS.items():
        entry = index[name]
        assert data[start + entry["offset"] : start + entry["offset"] + entry["length"]] == blob
        assert entry["crc32"] == zlib.crc32(blob)
    assert len(data) == start + sum(map(len, BLOBS.values()))
    header, blobs = read_container(path)
    assert header == HEADER
    assert {k: bytes(v) for k, v in blobs.items()} == BLOBS
    assert read_header(path) == HEADER
    assert read_header(path, with_blob_index=True)["blobs"] == index
    assert is_nns_file(path)


def test_truncation_anywhere_is_a_format_error(tmp_path):
    data = _file(tmp_path).read_bytes()
    for cut in range(len(data)):
        with pytest.raises(FormatError, match="truncated"):
            decode_container(data[:cut])
    cut_path = tmp_path / "cut.nns"
    cut_path.write_bytes(data[:-1])
    with pytest.raises(FormatError, match="truncated"):
        read_header(cut_path)


def test_flipped_byte_in_each_blob_fails_its_crc(tmp_path):
    data = _file(tmp_path).read_bytes()
    head_len = struct.unpack_from("<Q", data, 12)[0]
    start = PREFIX_SIZE + head_len
    index = json.loads(data[PREFIX_SIZE:start])["blobs"]
    for name, entry in index.items():
        if not entry["length"]:
            continue
        broken = bytearray(data)
        broken[start + entry["offset"] + entry["length"] // 2] ^= 0x40
        with pytest.raises(FormatError, match=f"CRC32 mismatch in blob '{name}'"):
            decode_container(bytes(broken))


def test_flipped_byte_in_header_fails_header_crc(tmp_path):
    broken = bytearray(_file(tmp_path).read_bytes())
    broken[PREFIX_SIZE + 3] ^= 0x01
    with pytest.raises(FormatError, match="header CRC32"):
        decode_container(bytes(broken))


def test_wrong_magic(tmp_path):
    data = bytearray(_file(tmp_path).read_bytes())
    data[:8] = b"PK\x03\x04xxxx"
    path = tmp_path / "zip.nns"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="not an nnshrink .nns file"):
        read_container(path)
    assert not is_nns_file(path)
    assert not is_nns_file(tmp_path / "missing.nns")


def test_newer_version_asks_for_upgrade(tmp_path):
    data = bytearray(_file(tmp_path).read_bytes())
    struct.pack_into("<I", data, 8, FORMAT_VERSION + 1)
    path = tmp_path / "new.nns"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="upgrade nnshrink"):
        read_container(path)
    with pytest.raises(FormatError, match="upgrade nnshrink"):
        read_header(path)


def test_trailing_bytes_and_absurd_header_length(tmp_path):
    data = _file(tmp_path).read_bytes()
    with pytest.raises(FormatError, match="trailing bytes"):
        decode_container(data + b"\x00")
    huge = bytearray(data)
    struct.pack_into("<Q", huge, 12, 2**60)
    with pytest.raises(FormatError, match="corrupted"):
        decode_container(bytes(huge))


def test_format_error_is_a_value_error():
    assert issubclass(FormatError, ValueError)


def test_failed_write_keeps_the_old_file(tmp_path):
    path = _file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="not plain JSON"):
        write_container(path, {"bad": object()}, {})
    with pytest.raises(ValueError, match="finite numbers"):
        write_container(path, {"loss": float("nan")}, {})
    with pytest.raises(ValueError, match="reserved"):
        write_container(path, {"blobs": 1}, {})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nns"]  # no temp files left


def test_empty_container():
    header, blobs = decode_container(encode_container({}, {}))
    assert header == {} and blobs == {}


def test_version_1_containers_still_read(tmp_path):
    data = bytearray(encode_container(HEADER, BLOBS))
    struct.pack_into("<I", data, 8, 1)  # same layout; version 1 files differ only in the header
    header, blobs = decode_container(bytes(data))
    assert header == HEADER and {k: bytes(v) for k, v in blobs.items()} == BLOBS


@pytest.mark.parametrize(
    "entry",
    [{"offset": -1, "length": 3, "crc32": 0}, {"offset": "0", "length": 3, "crc32": 0},
     {"offset": 0, "length": True, "crc32": 0}, {"offset": 0, "length": 3, "crc32": 2**32},
     {"offset": 0, "length": 3}, [0, 3, 0]],
)  # fmt: skip
def test_malformed_blob_index_entries(entry):
    head = json.dumps({"blobs": {"a": entry}}).encode()
    data = struct.pack("<8sIQI", MAGIC, FORMAT_VERSION, len(head), zlib.crc32(head)) + head + b"abc"
    with pytest.raises(FormatError, match="malformed index entry"):
        decode_container(data)


@pytest.mark.parametrize("head", [b"[" * 100_000, b'{"x": ' + b"9" * 5000 + b"}", b'{"x": NaN}'])
def test_hostile_json_is_a_format_error(head):
    data = struct.pack("<8sIQI", MAGIC, FORMAT_VERSION, len(head), zlib.crc32(head)) + head
    with pytest.raises(FormatError, match="not valid UTF-8 JSON"):
        decode_container(data)
