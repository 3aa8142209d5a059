"""XNOR + popcount kernels (nnshrink.binary.xnor) against the float64 sign-convolution oracle."""

import numpy as np
import pytest
import torch

from nnshrink.binary import xnor
from nnshrink.binary.ops import activation_scale
from nnshrink.binary.xnor import (
    PackedWeights,
    pack_signs,
    pack_weight_bits,
    unpack_weight_bits,
    xnor_backend,
    xnor_conv2d,
    xnor_conv2d_reference,
    xnor_linear,
)
from nnshrink.storage.packbits import pack_binary

HAVE_KERNEL = xnor_backend() != "torch"
needs_kernel = pytest.mark.skipif(not HAVE_KERNEL, reason="no C compiler: torch fallback only")


def _backends():
    out = ["torch"]
    if HAVE_KERNEL:
        out.append("portable")
        if xnor.kernel_library().avx512:
            out.append("avx512")
    return out


def _with_zeros(x: torch.Tensor) -> torch.Tensor:
    """Exact zeros (sign(0) = +1) and a negative zero in the input."""
    flat = x.view(-1)
    flat[:: max(1, flat.numel() // 17)] = 0.0
    flat[-1] = -0.0
    return x


# (N, C, O, H, W, kernel, stride, padding, dilation): odd channel counts around 64-bit words,
# output channels off the 8- and 32-lane blocks, border-only and strided/dilated windows
CASES = [
    (2, 3, 5, 6, 7, (3, 3), 1, 1, 1),
    (1, 63, 9, 5, 6, (3, 3), 1, 1, 1),
    (1, 64, 8, 5, 5, (3, 3), 2, 1, 1),
    (3, 65, 33, 7, 5, (3, 1), (2, 1), (1, 0), 1),
    (1, 130, 17, 6, 6, (5, 5), 1, 2, 1),
    (2, 20, 12, 9, 9, (3, 3), 1, 2, 2),
    (1, 1, 1, 4, 4, (1, 1), 1, 0, 1),
    (1, 7, 3, 2, 2, (3, 3), 1, 1, 1),  # every output pixel touches the padding
]


@pytest.mark.parametrize("case", CASES)
def test_conv_equals_float_reference_exactly(case):
    n, c, o, h, w, k, stride, padding, dilation = case
    x = _with_zeros(torch.randn(n, c, h, w))
    wt = _with_zeros(torch.randn(o, c, *k))
    packed = PackedWeights.from_weight(wt)
    ref = xnor_conv2d_reference(x, wt, stride=stride, padding=padding, dilation=dilation)
    assert ref.abs().max() > 0
    for backend in _backends():
        y = xnor_conv2d(
            x, packed, stride=stride, padding=padding, dilation=dilation, backend=backend
        )
        assert torch.equal(y, ref), backend


def test_scaled_conv_with_input_affine_all_layouts():
    torch.manual_seed(1)
    x = torch.randn(2, 70, 9, 16)[..., ::2]  # strided: neither channels nor pixels contiguous
    wt, scale, shift = torch.randn(40, 70, 3, 3), torch.randn(70), torch.randn(70)
    u = x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
    k = activation_scale(u, (3, 3), (2, 2), (1, 1))
    alpha, bias = torch.rand(40) + 0.1, torch.randn(40)
    ref = xnor_conv2d_reference(u, wt, stride=2, padding=1, k=k, alpha=alpha, bias=bias)
    packed = PackedWeights.from_weight(wt)
    layouts = [x, x.contiguous(), x.contiguous(memory_format=torch.channels_last)]
    for backend in _backends():
        for xin in layouts:
            fused = xnor_conv2d(xin, packed, stride=2, padding=1, k=k, alpha=alpha, bias=bias,
                                in_scale=scale, in_shift=shift, backend=backend)  # fmt: skip
            assert torch.equal(fused, ref), backend
        applied = xnor_conv2d(u, packed, stride=2, padding=1, k=k, alpha=alpha, bias=bias,
                              backend=backend)  # fmt: skip
        assert torch.equal(applied, ref), backend


def test_large_conv_uses_threads_and_matches():
    x, wt = torch.randn(1, 256, 14, 14), torch.randn(70, 256, 3, 3)
    ref = xnor_conv2d_reference(x, wt, padding=1)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for backend in _backends():
            y = xnor_conv2d(x, PackedWeights.from_weight(wt), padding=1, backend=backend)
            assert torch.equal(y, ref)


def test_linear_equals_sign_matmul():
    x, wt = _with_zeros(torch.randn(2, 3, 100)), torch.randn(9, 100)
    k = x.abs().mean(-1, keepdim=True)
    alpha, bias = torch.rand(9), torch.randn(9)
    signs = lambda t: torch.where(t >= 0, 1.0, -1.0).double()  # noqa: E731
    dot = (signs(x) @ signs(wt).T).float()
    ref = dot * k * alpha + bias
    for backend in _backends():
        y = xnor_linear(x, PackedWeights.from_weight(wt), k=k, alpha=alpha, bias=bias,
                        backend=backend)  # fmt: skip
        assert y.shape == (2, 3, 9) and torch.equal(y, ref), backend


def test_weight_bits_match_storage_packing():
    wt = torch.randn(6, 5, 3, 3)
    alpha = wt.abs().mean(dim=(1, 2, 3), keepdim=True)
    bits = pack_weight_bits(wt)
    assert bytes(bits.numpy()) == pack_binary(alpha * torch.where(wt >= 0, 1.0, -1.0)).data
    assert torch.equal(unpack_weight_bits(bits, wt.shape), torch.where(wt >= 0, 1.0, -1.0))
    with pytest.raises(ValueError, match="uint8"):
        PackedWeights(bits[:-1], tuple(wt.shape))


@needs_kernel
def test_pack_signs_layout():
    x = torch.randn(2, 70, 3, 4)
    x[0, 5, 1, 2] = 0.0
    for backend in ("portable", "avx512") if xnor.kernel_library().avx512 else ("portable",):
        words = pack_signs(x, (1, 2), backend=backend).numpy().view(np.uint64)
        assert words.shape == (2, 5, 8, 2)
        assert not words[:, 0].any() and not words[:, :, :2].any()  # the zero border
        inner = words[:, 1:-1, 2:-2]
        bits = (inner[..., np.arange(70) // 64] >> (np.arange(70) % 64).astype(np.uint64)) & 1
        assert np.array_equal(bits.astype(bool), (x >= 0).permute(0, 2, 3, 1).numpy())


def test_no_compiler_falls_back_to_torch(monkeypatch):
    x, wt = torch.randn(1, 5, 6, 6), torch.randn(4, 5, 3, 3)
    monkeypatch.setattr(xnor, "kernel_library", lambda: None)
    assert xnor_backend() == "torch"
    with pytest.raises(ValueError, match="backend='torch'"):
        xnor_backend("portable")
    y = xnor_conv2d(x, PackedWeights.from_weight(wt), padding=1)
    assert y.is_contiguous() and torch.equal(y, xnor_conv2d_reference(x, wt, padding=1))


def test_backend_choice_and_errors(monkeypatch):
    monkeypatch.setenv("NNSHRINK_XNOR_BACKEND", "torch")
    assert xnor_backend() == "torch"
    monkeypatch.setenv("NNSHRINK_XNOR_BACKEND", "fastest")
    with pytest.raises(ValueError, match="unknown XNOR backend"):
        xnor_backend()
    monkeypatch.delenv("NNSHRINK_XNOR_BACKEND")
    packed = PackedWeights.from_weight(torch.randn(4, 5, 3, 3))
    with pytest.raises(ValueError, match=r"\(N, 5, H, W\)"):
        xnor_conv2d(torch.randn(1, 4, 6, 6), packed)
    with pytest.raises(ValueError, match="smaller than"):
        xnor_conv2d(torch.randn(1, 5, 2, 2), packed)
