"""N:M codec: exact round trips in every layout, sizes, auto choice, hostile entries refused."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.storage import FormatError
from nnshrink.storage.dense import bit_view
from nnshrink.storage.nm import candidates, decode_nm, nm_nbytes, nm_split, position_bits
from nnshrink.storage.tensors import TensorOptions, decode_tensor, encode_tensor, plan_tensor


def _two_four(shape, seed=0, dtype=np.float32) -> np.ndarray:
    """A weight with the 2 largest of every 4 consecutive inputs kept (rows = shape[0])."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(dtype)
    groups = w.reshape(-1, 4)
    drop = np.argsort(np.abs(groups), axis=1)[:, :2]
    np.put_along_axis(groups, drop, 0, axis=1)
    return groups.reshape(shape)


def _roundtrip(array, **opts):
    fields, blobs = encode_tensor(array, str(array.dtype), TensorOptions(**opts))
    back = decode_tensor(fields, blobs)
    if fields["encoding"] in ("sparse", "nm"):
        array = array + array.dtype.type(0)  # -0.0 may come back as +0.0 (an equal value)
    np.testing.assert_array_equal(bit_view(back), bit_view(array))
    return fields, blobs


def test_linear_two_four_roundtrip_and_size():
    w = _two_four((32, 64))
    fields, blobs = _roundtrip(w)
    assert (fields["encoding"], fields["n"], fields["m"], fields["transposed"]) == (
        "nm",
        2,
        4,
        False,
    )
    # 1024 slots of float32 (random normals are not fp16-exact) + 2 bits each
    assert len(blobs["values"]) == 1024 * 4 and len(blobs["positions"]) == 1024 * 2 // 8
    sizes: dict[str, int] = {}
    for plan in plan_tensor(w, "float32", TensorOptions()):  # nm plans: 2:4, 4:8, 8:16
        sizes[plan.encoding] = min(plan.nbytes, sizes.get(plan.encoding, plan.nbytes))
        assert plan.nbytes == sum(len(b) for b in plan.build()[1].values())
    assert sizes["nm"] == min(sizes.values()) == 1024 * 4 + 256 < sizes["sparse"]


def test_special_values_fewer_nonzeros_and_fp16_values():
    w = np.zeros((4, 8), np.float32)
    w[0, :2] = [np.nan, -np.inf]
    w[1, 5] = 3.0  # a group with one non-zero: its second slot holds a zero position
    w[2, 1] = -0.0  # a negative zero
    w[3, [4, 7]] = [0.5, -2.0]  # fp16-exact values
    fields, _ = _roundtrip(w, encoding="nm")
    assert fields["value_dtype"] == "float16"
    values, positions = nm_split(w, 2, 4, False)
    # groups run along rows: row 1's groups are 2 and 3; row 2's first group is 4
    assert positions.reshape(-1, 2)[2].tolist() == [0, 1] and values.size == 16
    assert positions[9] == 1 and np.signbit(values[9])  # in a group with room, -0.0 is kept
    forced, _ = _roundtrip(_two_four((8, 16)).astype(np.float16) * np.float16(1), encoding="nm")
    assert forced["value_dtype"] == "float16"


def test_transposed_and_conv_layouts():
    w = _two_four((24, 16)).T.copy()  # GPT-2 Conv1D stores (in, out): groups run down columns
    fields, _ = _roundtrip(w, encoding="nm")
    assert fields["transposed"] is True
    conv = _two_four((8, 4, 3, 3)[:1] + (36,)).reshape(8, 4, 3, 3)  # groups over (in, kh, kw)
    fields, _ = _roundtrip(conv, encoding="nm")
    assert fields["transposed"] is False and (fields["n"], fields["m"]) == (2, 4)


def test_candidates_and_forced_on_a_dense_tensor():
    assert candidates(np.ones((4, 8), np.float32)) == []
    assert candidates(np.ones(8, np.float32)) == []  # 1-D: no (rows, cols) layout
    assert (1, 4, False) in candidates(np.eye(4, 8, dtype=np.float32))
    with pytest.raises(ValueError, match="N:M"):
        encode_tensor(np.ones((4, 8), np.float32), "float32", TensorOptions(encoding="nm"))
    assert nm_nbytes(16, 2, 4, 2) == 8 * 2 + 2 and position_bits(16) == 4


def test_wanda_two_four_model_saves_compactly_and_loads_exactly(tmp_path):
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    ns.compress_(model, ns.Wanda(pattern="2:4"), example_inputs=torch.randn(32, 64))
    ns.finalize(model)
    report = ns.save(model, tmp_path / "m.nns")
    rows = {r.name: r for r in report.rows}
    assert rows["0.weight"].encoding == "nm" and rows["0.weight"].entries == 64 * 128 // 2
    assert rows["0.weight"].stored_bytes == 4096 * 4 + 4096 * 2 // 8
    back = ns.load(
        tmp_path / "m.nns", model=nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    )
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def _entry(array):
    fields, blobs = encode_tensor(array, "float32", TensorOptions(encoding="nm"))
    return fields, blobs


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"n": 4}, "0 < n < m"),
        ({"m": "4"}, "integers"),
        ({"transposed": 1}, "transposed"),
        ({"entries": 10}, "slots expected"),
        ({"m": 8, "n": 2}, "slots expected"),
        ({"m": 7, "n": 2}, "multiple of m=7"),
    ],
)
def test_hostile_fields_raise_format_error(change, match):
    fields, blobs = _entry(_two_four((4, 16)))
    fields.update(change)
    with pytest.raises(FormatError, match=match):
        decode_tensor(fields, blobs)


def test_hostile_positions_raise_format_error():
    fields, blobs = _entry(_two_four((4, 16)))
    with pytest.raises(FormatError, match="positions part"):
        decode_tensor(fields, {**blobs, "positions": blobs["positions"][:-1]})
    dup = bytes([0b0101_0101]) * len(blobs["positions"])  # every slot at position 1
    with pytest.raises(FormatError, match="increasing"):
        decode_tensor(fields, {**blobs, "positions": dup})
    f32 = np.dtype("<f4")
    with pytest.raises(FormatError, match="no \\(rows, cols\\)"):
        decode_nm((64,), fields, blobs, f32)
    with pytest.raises(FormatError, match="transposed"):
        decode_nm((2, 2, 16), {**fields, "transposed": True}, blobs, f32)
    with pytest.raises(FormatError, match="value_dtype"):
        decode_nm((4, 16), {**fields, "value_dtype": "complex"}, blobs, f32)
    with pytest.raises(FormatError, match="parts"):
        decode_nm((4, 16), fields, {"values": blobs["values"]}, f32)
    assert math.prod((4, 16)) // 4 * 2 == fields["entries"]
