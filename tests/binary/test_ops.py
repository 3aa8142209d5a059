"""Pure binary/ternary functions (nnshrink.binary.ops) against their formulas."""

import pytest
import torch
import torch.nn.functional as F

from nnshrink.binary.layers import (
    ternarize_twn,
    twn_threshold,
)
from nnshrink.binary.ops import (
    activation_scale,
    binarize,
    binary_activation,
    sign_pm1,
    ste,
    xnor_scales,
)


def test_twn_threshold_and_scale():
    w = torch.tensor([0.9, -0.6, 0.2, -0.1, 0.05, 0.0])
    delta = twn_threshold(w)
    assert delta.item() == pytest.approx(0.7 * (0.9 + 0.6 + 0.2 + 0.1 + 0.05) / 6)
    # |w| > 0.2158...: 0.9 and -0.6 kept; alpha = 0.75
    torch.testing.assert_close(ternarize_twn(w), torch.tensor([0.75, -0.75, 0, 0, 0, 0.0]))


def test_sign_binarize_and_xnor_against_formulas():
    w = torch.tensor([[0.5, -0.25, 0.0], [-2.0, 1.0, 3.0]])
    assert torch.equal(sign_pm1(w), torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 1.0]]))
    assert torch.equal(binarize(w, "deterministic"), sign_pm1(w))
    alpha = w.abs().mean(dim=1, keepdim=True)  # per output channel
    torch.testing.assert_close(binarize(w, "xnor"), alpha * sign_pm1(w))
    torch.testing.assert_close(xnor_scales(w).flatten(), alpha.flatten())


def test_ste_value_is_quantized_and_gradient_is_identity():
    w = torch.randn(5, requires_grad=True)
    q = sign_pm1(w.detach())
    out = ste(w, q)
    assert torch.equal(out, q)
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones(5))


def test_binary_activation_value_and_clipped_gradient():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.7, 1.0, 2.0], requires_grad=True)
    y = binary_activation(x)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0]))
    (y * torch.arange(7.0)).sum().backward()
    # d/dx clip(x, -1, 1): 1 inside [-1, 1], 0 outside (BinaryNet / XNOR-Net STE)
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0]))


def test_activation_scale_is_mean_abs_box_filtered():
    x = torch.randn(2, 5, 7, 6)
    a = x.abs().mean(dim=1, keepdim=True)
    expected = F.avg_pool2d(a, 3, stride=2, padding=1, count_include_pad=True)
    torch.testing.assert_close(activation_scale(x, (3, 3), (2, 2), (1, 1)), expected)
    dilated = activation_scale(x, (2, 2), (1, 1), (0, 0), (2, 2))
    torch.testing.assert_close(dilated, (a[..., :-2, :-2] + a[..., 2:, :-2] + a[..., :-2, 2:]
                                         + a[..., 2:, 2:]) / 4)  # fmt: skip
    torch.testing.assert_close(activation_scale(x[:, :, 0, 0]), a[:, :, 0, 0])
