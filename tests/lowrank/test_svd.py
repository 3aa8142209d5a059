"""Truncated SVD of Linear layers against the Eckart–Young optimum."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.lowrank.svd import svd_factors, svd_linear, svd_macs, svd_params
from nnshrink.metrics import count_macs, count_params


def test_full_rank_reproduces_the_layer():
    layer = nn.Linear(20, 12)
    x = torch.randn(5, 20)
    seq = svd_linear(layer, 12)
    assert isinstance(seq, nn.Sequential) and [type(m) for m in seq] == [nn.Linear, nn.Linear]
    assert seq[0].bias is None and seq[1].bias is not None
    torch.testing.assert_close(seq(x), layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(30, 17), (17, 30), (25, 25)])
def test_rank_r_error_is_the_eckart_young_optimum(shape):
    w = torch.randn(*shape, dtype=torch.float64)
    sigma = torch.linalg.svdvals(w)
    errors = []
    for r in range(1, min(shape) + 1):
        a, b = svd_factors(w, r)
        err = float((w - a @ b).norm())
        assert err == pytest.approx(float(sigma[r:].pow(2).sum().sqrt()), abs=1e-9)
        errors.append(err)
    assert all(e1 >= e2 for e1, e2 in zip(errors, errors[1:]))  # monotone in rank
    assert errors[-1] < 1e-9


def test_factors_are_balanced():
    a, b = svd_factors(torch.randn(40, 30, dtype=torch.float64), 5)
    torch.testing.assert_close(a.norm(dim=0), b.norm(dim=1))


def test_macs_and_params_formulas_match_the_counters():
    layer = nn.Linear(64, 48, bias=True)
    seq = svd_linear(layer, 10)
    x = torch.randn(3, 64)
    assert count_macs(seq, x) == svd_macs(64, 48, 10, tokens=3)
    assert count_params(seq) == svd_params(64, 48, 10, bias=True)


def test_bad_rank_and_type():
    with pytest.raises(ValueError, match="rank must be in"):
        svd_factors(torch.randn(4, 3), 4)
    with pytest.raises(TypeError, match="nn.Linear"):
        svd_linear(nn.Conv2d(1, 1, 1), 1)
