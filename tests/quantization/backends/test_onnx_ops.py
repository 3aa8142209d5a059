import numpy as np
import torch

from nnshrink.quantization.backends.onnx_ops import dynamic_int8_matmul, nbits_layout
from nnshrink.quantization.int8_linear import weight_codes


def test_nbits_layout_packs_codes_with_the_default_zero_point():
    codes = torch.tensor([[-7, 7, 0, 1] * 8], dtype=torch.int8)  # (1, 32)
    scales = torch.tensor([[0.5, 0.25]])
    packed, flat, block = nbits_layout(codes, scales, 4, 32, 1, 16)
    assert block == 16 and packed.shape == (1, 2, 8) and packed.dtype == torch.uint8
    first = int(packed[0, 0, 0])
    assert first & 0xF == -7 + 8 and first >> 4 == 7 + 8  # even index in the low nibble
    assert np.allclose(flat.numpy(), [0.5, 0.25])
    packed8, _, block8 = nbits_layout(codes[:, :20], scales[:, :1], 8, 20, 1, 0)
    assert block8 == 32 and packed8.shape == (1, 1, 32)  # per channel: one padded block
    assert packed8[0, 0, :20].tolist() == (codes[0, :20].int() + 128).tolist()
    assert packed8[0, 0, 20:].tolist() == [128] * 12  # padding holds code 0


def test_dynamic_reference_forward_uses_the_codes():
    torch.manual_seed(0)
    w = torch.randn(5, 7)
    codes, scales = weight_codes(w, 8, 0)
    x = torch.randn(3, 7)
    y = dynamic_int8_matmul(x, codes, scales, torch.ones(5))
    assert torch.allclose(y, x @ (codes.float() * scales).t() + 1, atol=1e-5)
