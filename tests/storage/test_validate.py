"""Tensor-entry validation: every header field range-checked against the blobs, before decoding."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from nnshrink.storage.tensors import TensorOptions, decode_tensor, encode_tensor
from nnshrink.storage.validate import check_entry


def _entry(array, **opts):
    fields, parts = encode_tensor(array, str(array.dtype), TensorOptions(**opts))
    fields["blobs"] = {part: f"t/{part}" for part in parts}
    lengths = {f"t/{part}": len(data) for part, data in parts.items()}
    return fields, lengths, {part: data for part, data in parts.items()}


def _sparse_array():
    rng = np.random.default_rng(0)
    a = np.zeros((16, 16), np.float32)
    a.flat[rng.choice(256, 20, replace=False)] = rng.choice([0.5, -0.25, 1.0], 20)
    return a


CASES = {
    "dense": (np.arange(12, dtype=np.float32).reshape(3, 4) + 0.1, {"encoding": "dense"}),
    "sparse": (_sparse_array(), {"encoding": "sparse", "huffman": False}),
    "sparse_huffman": (_sparse_array(), {"encoding": "sparse", "index_bits": 2}),
    "codebook": (np.tile(np.float32([0.5, 1.5, -2.0, 3.0]), 8), {"encoding": "codebook"}),
    "sparse_codebook": (_sparse_array(), {"encoding": "sparse_codebook"}),
    "binary": (np.float32([[0.5, -0.5, 0.5], [-2.0, 2.0, 2.0]]), {"encoding": "binary"}),
    "ternary": (np.float32([[0.3, 0.0, -0.1, 0.3], [0, 1, 0, 0]]), {"encoding": "ternary"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_valid_entries_pass_and_decode(case):
    array, opts = CASES[case]
    entry, lengths, parts = _entry(array, **opts)
    assert check_entry("t", entry, lengths) == array.nbytes
    assert np.array_equal(decode_tensor(entry, parts), array)


BAD = [
    ("dense", {"dtype": "float128"}, "unsupported dtype"),
    ("dense", {"dtype": ["float32"]}, "unsupported dtype"),
    ("dense", {"shape": [3, -4]}, "shape must be"),
    ("dense", {"shape": [3, 4.0]}, "shape must be"),
    ("dense", {"shape": [1] * 40}, "shape must be"),
    ("dense", {"shape": [10**6, 10**6], "numel": 10**12}, "blob 'values' holds 48 bytes"),
    ("dense", {"numel": 13}, "numel 13 != product"),
    ("dense", {"numel": True}, "numel"),
    ("dense", {"nnz": 99}, "'nnz' must be an integer in \\[0, 12\\]"),
    ("dense", {"value_dtype": "int8"}, "value_dtype 'int8' cannot hold float32"),
    ("dense", {"blobs": {"values": "elsewhere"}}, "'blobs' must map"),
    ("dense", {"blobs": {"values": "t/values", "extra": "t/values"}}, "needs parts"),
    ("dense", {"encoding": 7}, "encoding must be a string"),
    ("sparse", {"index_bits": 0}, "'index_bits' must be an integer in \\[1, 8\\]"),
    ("sparse", {"index_bits": 9}, "'index_bits'"),
    ("sparse", {"index_bits": True}, "'index_bits'"),
    ("sparse", {"entries": 10**12}, "'entries' must be an integer in \\[0, 256\\]"),
    ("sparse", {"entries": 3}, "blob 'positions' holds"),
    ("sparse", {"positions_coding": "zip"}, "must be 'packed' or 'huffman'"),
    ("sparse_huffman", {"entries": 256}, "cannot hold 256 symbols"),
    ("codebook", {"bits": 0}, "'bits'"),
    ("codebook", {"codebook_size": 5}, "'codebook_size' must be an integer in \\[1, 4\\]"),
    ("codebook", {"codebook_size": 0}, "'codebook_size'"),
    ("codebook", {"value_dtype": "float64"}, "value_dtype"),
    ("sparse_codebook", {"indices_coding": None}, "indices_coding"),
    ("binary", {"dtype": "float64"}, "non-empty float32"),
    ("binary", {"scales_shape": [3]}, "scales_shape"),
    ("binary", {"scales_shape": [2, 2]}, "scales_shape"),
    ("ternary", {"scales_shape": [2]}, "scales_shape"),
    ("ternary", {"scales_shape": [1, 2.0]}, "scales_shape"),
    ("ternary", {"shape": [4, 2], "numel": 8}, "holds 2 bytes, expected 2|scales"),
    ("dense", {"index_bits": 5}, "fields \\['index_bits'\\] do not belong to a dense entry"),
    ("sparse_codebook", {"scales_shape": [1]}, "do not belong"),
    ("dense", {"kind": "evil"}, "kind must be one of"),
]


@pytest.mark.parametrize("case, change, match", BAD)
def test_bad_fields_are_refused(case, change, match):
    array, opts = CASES[case]
    entry, lengths, _ = _entry(array, **opts)
    entry = copy.deepcopy(entry)
    entry.update(change)
    with pytest.raises(ValueError, match=match):
        check_entry("t", entry, lengths)


def test_unknown_encodings_get_the_generic_checks():
    entry = {"shape": [4], "dtype": "float32", "numel": 4, "encoding": "nm_sparse",
             "blobs": {"values": "t/values"}}  # fmt: skip
    assert check_entry("t", entry, {"t/values": 3}) == 16  # its own decoder checks the rest
    with pytest.raises(ValueError, match="numel"):
        check_entry("t", {**entry, "numel": 5}, {"t/values": 3})
