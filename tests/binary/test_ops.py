"""Pure binary/ternary functions (nnshrink.binary.ops) against their formulas."""

import pytest
import torch

from nnshrink.binary.layers import (
    ternarize_twn,
    twn_threshold,
)
from nnshrink.binary.ops import binarize, sign_pm1, ste, xnor_scales


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
