"""Per-tensor encodings: exact round trip for each, sizes as planned, smallest chosen."""

from __future__ import annotations

import numpy as np
import pytest

from nnshrink.storage.dense import bit_view
from nnshrink.storage.tensors import (
    TensorOptions,
    decode_tensor,
    encode_tensor,
    plan_tensor,
)


def _pruned_shared(shape, sparsity=0.9, levels=16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[np.abs(w) < np.quantile(np.abs(w), sparsity)] = 0
    table = np.linspace(-3, 3, levels).astype(np.float32)
    nz = w != 0
    w[nz] = table[np.abs(w[nz][:, None] - table).argmin(axis=1)]
    return w


def _roundtrip(array, opts, dtype="float32"):
    fields, blobs = encode_tensor(array, dtype, opts)
    back = decode_tensor(fields, blobs)
    assert back.shape == array.shape and back.dtype == array.dtype
    if fields["encoding"] in ("sparse", "sparse_codebook", "binary", "ternary"):
        array = array + array.dtype.type(0)  # these store -0.0 as +0.0 (equal values)
    np.testing.assert_array_equal(bit_view(back), bit_view(array))
    return fields, blobs


@pytest.mark.parametrize("encoding", ["dense", "sparse", "codebook", "sparse_codebook"])
@pytest.mark.parametrize("huffman", [False, True])
@pytest.mark.parametrize("index_bits", [4, 5, "auto"])
def test_forced_encodings_roundtrip(encoding, huffman, index_bits):
    w = _pruned_shared((40, 3, 5, 5))
    opts = TensorOptions(encoding=encoding, huffman=huffman, index_bits=index_bits)
    fields, _ = _roundtrip(w, opts)
    assert fields["encoding"] == encoding


def test_planned_sizes_equal_written_sizes():
    w = _pruned_shared((64, 50), sparsity=0.8, levels=8)
    for opts in (TensorOptions(), TensorOptions(huffman=False, index_bits="auto")):
        for plan in plan_tensor(w, "float32", opts):
            _, blobs = plan.build()
            assert plan.nbytes == sum(len(b) for b in blobs.values()), plan.encoding


def test_auto_picks_the_smallest():
    w = _pruned_shared((100, 100))
    sizes = {p.encoding: p.nbytes for p in plan_tensor(w, "float32", TensorOptions())}
    fields, blobs = _roundtrip(w, TensorOptions())
    assert fields["encoding"] == min(sizes, key=sizes.get) == "sparse_codebook"
    assert sum(map(len, blobs.values())) == min(sizes.values())
    dense = np.random.default_rng(0).standard_normal((30, 30)).astype(np.float32)
    assert _roundtrip(dense, TensorOptions())[0]["encoding"] == "dense"
    shared = _pruned_shared((30, 30), sparsity=0.0, levels=4)
    assert _roundtrip(shared, TensorOptions())[0]["encoding"] == "codebook"


def test_fixed_bits_widen_when_needed_and_too_many_values():
    w = _pruned_shared((50, 50), levels=16)
    fields, _ = _roundtrip(w, TensorOptions(encoding="sparse_codebook", bits=8, huffman=False))
    assert fields["bits"] == 8
    fields, _ = _roundtrip(w, TensorOptions(encoding="codebook", bits=2))
    assert fields["bits"] == max(2, int(np.unique(w).size - 1).bit_length()) > 2
    many = np.random.default_rng(0).standard_normal((30, 30)).astype(np.float32)
    with pytest.raises(ValueError, match="does not apply"):
        encode_tensor(many, "float32", TensorOptions(encoding="codebook"))


def test_value_dtype_fp16_when_exact_and_forced():
    w = _pruned_shared((20, 20), levels=8)  # linspace(-3, 3, 8) is not fp16-exact
    assert _roundtrip(w, TensorOptions(encoding="dense"))[0]["value_dtype"] == "float32"
    halfs = w.astype(np.float16).astype(np.float32)
    fields, _ = _roundtrip(halfs, TensorOptions(encoding="codebook"))
    assert fields["value_dtype"] == "float16"
    fields, blobs = encode_tensor(w, "float32", TensorOptions(value_dtype="float16"))
    back = decode_tensor(fields, blobs)
    np.testing.assert_allclose(back, w, rtol=1e-3)


@pytest.mark.parametrize("kind", ["binary", "ternary"])
def test_sign_layers(kind):
    rng = np.random.default_rng(3)
    scale = rng.random((16, 1, 1, 1)).astype(np.float32) + 0.1
    signs = np.sign(rng.standard_normal((16, 8, 3, 3))).astype(np.float32)
    if kind == "ternary":
        signs[rng.random(signs.shape) < 0.3] = 0
    w = (signs * scale).astype(np.float32)
    fields, blobs = _roundtrip(w, TensorOptions(encoding=kind))
    per_weight = 1 if kind == "binary" else 2
    assert len(blobs["symbols"]) == w.size * per_weight // 8
    assert _roundtrip(w, TensorOptions())[0]["encoding"] == kind  # beats a 32-entry codebook
    with pytest.raises(ValueError, match="does not apply"):
        encode_tensor(
            w + 0.01 * rng.random(w.shape).astype(np.float32),
            "float32",
            TensorOptions(encoding=kind),
        )


def test_edge_tensors():
    for encoding in ("auto", "dense", "sparse", "sparse_codebook"):
        _roundtrip(np.zeros((0, 3), np.float32), TensorOptions(encoding=encoding))
    fields, blobs = _roundtrip(np.zeros((8, 8), np.float32), TensorOptions())
    assert fields["nnz"] == 0 and sum(map(len, blobs.values())) == 0
    _roundtrip(np.full((5, 5), 0.25, np.float32), TensorOptions())
    _roundtrip(np.array(3.0, np.float32), TensorOptions())
    special = np.array([[0.0, -0.0, np.nan, np.inf], [0, 0, 0, -np.inf]], np.float32)
    for encoding in ("dense", "sparse", "codebook", "sparse_codebook"):
        _roundtrip(special, TensorOptions(encoding=encoding))
    ints = np.array([0, 0, 7, 0, 9], np.int64)
    _roundtrip(ints, TensorOptions(), dtype="int64")
    _roundtrip(np.array([0x3F80, 0, 0, 0xBF80], np.uint16), TensorOptions(), dtype="bfloat16")


def test_decode_rejects_bad_entries():
    fields, blobs = encode_tensor(_pruned_shared((10, 10)), "float32", TensorOptions())
    with pytest.raises(ValueError, match="numel"):
        decode_tensor({**fields, "numel": 99}, blobs)
    with pytest.raises(ValueError, match="newer nnshrink"):
        decode_tensor({**fields, "encoding": "zstd"}, blobs)
    with pytest.raises(KeyError):
        decode_tensor(fields, {})


def test_codebook_feasibility_looks_past_the_early_sample():
    rng = np.random.default_rng(5)
    w = rng.choice(np.float32([0.5, -0.5, 1.0]), size=70_000)
    fields, _ = _roundtrip(w, TensorOptions())
    assert fields["encoding"] == "codebook"
    w[-300:] = rng.standard_normal(300)  # 303 distinct values, all after the 16384-value sample
    plans = {p.encoding for p in plan_tensor(w, "float32", TensorOptions())}
    assert "codebook" not in plans and "dense" in plans
