import numpy as np
import pytest
import torch

from nnshrink.storage.packbits import (
    pack_binary,
    pack_bits,
    pack_ternary,
    packed_nbytes,
    unpack_binary,
    unpack_bits,
    unpack_ternary,
)


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [0, 1, 3, 7, 8, 9, 1001])
def test_pack_bits_round_trip_exact(bits, count):
    rng = np.random.default_rng(bits * 1000 + count)
    values = rng.integers(0, 2**bits, size=count)
    data = pack_bits(values, bits)
    assert len(data) == packed_nbytes(count, bits) == -(-count * bits // 8)
    out = unpack_bits(data, bits, count)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, values)


def test_pack_bits_layout_is_lsb_first():
    # symbols 1, 2, 3 of 2 bits -> bits 10 01 11 (LSB first) -> byte 0b00111001
    assert pack_bits(np.array([1, 2, 3]), 2) == bytes([0b00111001])
    assert pack_bits(np.array([1, 0, 0, 0, 0, 0, 0, 0, 1]), 1) == bytes([1, 1])


def test_pack_bits_accepts_tensors_and_extreme_values():
    t = torch.tensor([[0, 255], [128, 7]], dtype=torch.uint8)
    assert unpack_bits(pack_bits(t, 8), 8, 4).tolist() == [0, 255, 128, 7]
    assert unpack_bits(pack_bits(torch.full((5,), 31), 5), 5, 5).tolist() == [31] * 5


def test_pack_bits_rejects_bad_input():
    with pytest.raises(ValueError, match="more bits"):
        pack_bits(np.array([4]), 2)
    with pytest.raises(ValueError, match="1..8"):
        pack_bits(np.array([1]), 9)
    with pytest.raises(ValueError, match="integer"):
        pack_bits(np.array([0.5]), 2)
    with pytest.raises(ValueError, match="need"):
        unpack_bits(b"\x00", 3, 5)


def test_pack_binary_per_channel_round_trip():
    w = (
        torch.sign(torch.randn(5, 3, 3, 3))
        * torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])[:, None, None, None]
    )
    w[w == 0] = 0.1
    packed = pack_binary(w)
    assert packed.bits == 1 and len(packed.data) == packed_nbytes(135, 1)
    assert packed.scales.shape == (5,)
    assert torch.equal(unpack_binary(packed), w)
    assert packed.nbytes == len(packed.data) + 5 * 4


def test_pack_binary_single_scale_is_compact():
    w = torch.where(torch.randn(7, 13) >= 0, 1.0, -1.0)
    packed = pack_binary(w)
    assert packed.scales.shape == (1,)
    assert packed.nbytes == packed_nbytes(91, 1) + 4
    assert torch.equal(unpack_binary(packed), w)


def test_pack_binary_rejects_zeros_and_mixed_magnitudes():
    with pytest.raises(ValueError, match="pack_ternary"):
        pack_binary(torch.tensor([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="distinct"):
        pack_binary(torch.tensor([[1.0, -2.0]]))


def test_pack_ternary_round_trip_per_layer_and_per_channel():
    pattern = torch.randint(-1, 2, (6, 11)).float()
    layer = pattern * 0.3
    packed = pack_ternary(layer)
    assert packed.scales.shape == (1, 2)
    assert packed.nbytes == packed_nbytes(66, 2) + 8
    assert torch.equal(unpack_ternary(packed), layer)
    # TTQ-style: asymmetric positive/negative magnitudes per channel
    pos = torch.linspace(0.1, 0.6, 6)[:, None]
    neg = torch.linspace(0.7, 0.2, 6)[:, None]
    ttq = torch.where(pattern > 0, pos, torch.where(pattern < 0, -neg, torch.zeros(())))
    p2 = pack_ternary(ttq)
    assert p2.scales.shape == (6, 2)
    assert torch.equal(unpack_ternary(p2), ttq)


def test_pack_ternary_rejects_non_ternary():
    with pytest.raises(ValueError, match="distinct positive"):
        pack_ternary(torch.tensor([[0.1, 0.2, 0.0]]))
