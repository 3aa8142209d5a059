"""CP conv: the four factored convs compute exactly the conv with the CP kernel."""

from __future__ import annotations

import pytest
import tensorly as tl
import torch
from torch import nn

from nnshrink.lowrank.cp import cp_conv, cp_factors, cp_macs, cp_params, cp_reconstruct
from nnshrink.metrics import count_macs, count_params

from .test_tucker import VARIANTS


@pytest.mark.parametrize("fuse", [False, True], ids=["four-convs", "fused-spatial"])
@pytest.mark.parametrize("kwargs", VARIANTS)
def test_output_equals_conv_with_reconstructed_kernel(kwargs, fuse):
    kwargs = dict(kwargs)
    kernel = kwargs.pop("kernel_size", 3)
    conv = nn.Conv2d(6, 10, kernel, **kwargs).double()
    factors = cp_factors(conv.weight, 12, n_iter_max=3)  # the identity holds for any factors
    seq = cp_conv(conv, factors, fuse_spatial=fuse)
    groups = [1, 12, 1] if fuse else [1, 12, 12, 1]
    assert [type(m) for m in seq] == [nn.Conv2d] * len(groups)
    assert [m.groups for m in seq] == groups
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64)
    expected = conv._conv_forward(x, cp_reconstruct(factors), conv.bias)
    torch.testing.assert_close(seq(x), expected, atol=1e-10, rtol=1e-10)


def test_recovers_an_exact_low_rank_kernel():
    g = torch.Generator().manual_seed(0)
    factors = [torch.randn(n, 3, generator=g, dtype=torch.float64) for n in (8, 6, 3, 3)]
    w = torch.einsum("or,ir,yr,xr->oiyx", *factors)
    approx = cp_reconstruct(cp_factors(w, 3, n_iter_max=300, tol=1e-12))
    assert float((approx - w).norm() / w.norm()) < 1e-4


def test_error_decreases_with_rank():
    w = torch.randn(10, 8, 3, 3, dtype=torch.float64)
    errors = [
        float((cp_reconstruct(cp_factors(w, r, n_iter_max=30)) - w).norm() / w.norm())
        for r in (1, 4, 16)
    ]
    assert all(e1 > e2 for e1, e2 in zip(errors, errors[1:])), errors


def test_deterministic_and_backend_untouched():
    w = torch.randn(8, 4, 3, 3)
    before = tl.get_backend()
    a = cp_factors(w, 5, n_iter_max=5, seed=3)
    b = cp_factors(w, 5, n_iter_max=5, seed=3)
    assert tl.get_backend() == before
    assert torch.equal(a.out, b.out) and torch.equal(a.horizontal, b.horizontal)


@pytest.mark.parametrize("fuse", [False, True], ids=["four-convs", "fused-spatial"])
def test_macs_and_params_formulas_match_the_counters(fuse):
    conv = nn.Conv2d(16, 32, (3, 5), stride=2, padding=(1, 2), bias=True)
    factors = cp_factors(conv.weight, 7, n_iter_max=5)
    seq = cp_conv(conv, factors, fuse_spatial=fuse)
    x = torch.randn(1, 16, 10, 12)
    out = conv(x)
    out_hw = tuple(out.shape[-2:])
    assert count_macs(seq, x) == cp_macs(conv, 7, (10, 12), out_hw, fuse_spatial=fuse)
    assert count_params(seq) == cp_params(conv, 7, fuse_spatial=fuse)
    assert seq[0].weight.dtype == conv.weight.dtype


def test_grouped_conv_is_rejected():
    conv = nn.Conv2d(8, 16, 3, groups=2)
    with pytest.raises(ValueError, match="grouped conv"):
        cp_conv(conv, cp_factors(torch.randn(16, 4, 3, 3), 2, n_iter_max=2))
