"""Tucker-2 conv: the factored layers compute exactly the conv with the reconstructed kernel."""

from __future__ import annotations

import pytest
import tensorly as tl
import torch
from torch import nn

from nnshrink.lowrank.tucker import (
    tucker2_conv,
    tucker2_factors,
    tucker2_macs,
    tucker2_params,
    tucker2_reconstruct,
)
from nnshrink.metrics import count_macs, count_params

VARIANTS = [
    {"padding": 1},
    {"stride": 2, "padding": 1, "bias": False},
    {"stride": (2, 1), "padding": (2, 1), "dilation": (2, 1)},
    {"padding": "same", "dilation": 2},
    {"padding": 1, "padding_mode": "reflect"},
    {"kernel_size": (3, 5), "padding": (1, 2), "padding_mode": "circular", "stride": (1, 2)},
]


@pytest.mark.parametrize("method", ["hosvd", "hooi"])
@pytest.mark.parametrize("kwargs", VARIANTS)
def test_output_equals_conv_with_reconstructed_kernel(kwargs, method):
    kwargs = dict(kwargs)
    kernel = kwargs.pop("kernel_size", 3)
    conv = nn.Conv2d(6, 10, kernel, **kwargs).double()
    factors = tucker2_factors(conv.weight, (5, 4), method=method)
    seq = tucker2_conv(conv, factors)
    assert [type(m) for m in seq] == [nn.Conv2d] * 3
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64)
    expected = conv._conv_forward(x, tucker2_reconstruct(factors), conv.bias)
    torch.testing.assert_close(seq(x), expected, atol=1e-10, rtol=1e-10)


def test_full_ranks_reproduce_the_conv():
    conv = nn.Conv2d(4, 6, 3, padding=1)
    seq = tucker2_conv(conv, tucker2_factors(conv.weight, (6, 4)))
    x = torch.randn(1, 4, 7, 7)
    torch.testing.assert_close(seq(x), conv(x), atol=1e-5, rtol=1e-5)


def test_error_decreases_with_rank_and_hooi_is_no_worse_than_hosvd():
    w = torch.randn(16, 12, 3, 3, dtype=torch.float64)
    prev = float("inf")
    for r in (1, 2, 4, 8, 12, 16):
        ranks = (r, min(r, 12))
        hosvd = float((tucker2_reconstruct(tucker2_factors(w, ranks)) - w).norm())
        hooi = float((tucker2_reconstruct(tucker2_factors(w, ranks, method="hooi")) - w).norm())
        assert hosvd <= prev + 1e-12
        assert hooi <= hosvd + 1e-9
        prev = hosvd
    assert prev < 1e-9


def test_global_tensorly_backend_is_left_alone():
    before = tl.get_backend()
    tucker2_factors(torch.randn(4, 4, 3, 3), (2, 2), method="hooi")
    assert tl.get_backend() == before


def test_macs_and_params_formulas_match_the_counters():
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=True)
    seq = tucker2_conv(conv, tucker2_factors(conv.weight, (8, 5)))
    x = torch.randn(1, 16, 10, 10)
    out = conv(x)
    assert count_macs(seq, x) == tucker2_macs(conv, (8, 5), (10, 10), tuple(out.shape[-2:]))
    assert count_params(seq) == tucker2_params(conv, (8, 5))


def test_grouped_conv_is_rejected_with_a_clear_message():
    conv = nn.Conv2d(8, 8, 3, groups=8)
    with pytest.raises(ValueError, match="depthwise"):
        tucker2_conv(conv, tucker2_factors(torch.randn(8, 8, 3, 3), (2, 2)))
    with pytest.raises(ValueError, match="out of range"):
        tucker2_factors(torch.randn(4, 4, 3, 3), (5, 2))


@pytest.mark.parametrize(
    ("ranks", "kinds"),
    [((10, 3), ["1x1", "core"]), ((4, 6), ["core", "1x1"]), ((10, 6), ["core"])],
)
@pytest.mark.parametrize("kwargs", VARIANTS[:3])
def test_a_full_rank_mode_is_folded_into_the_core(ranks, kinds, kwargs):
    # (C_out, R_in): 1x1 → core; (R_out, C_in): core → 1x1; both full: the core alone. The
    # oracle is the conv with the reconstructed kernel, as for three layers.
    conv = nn.Conv2d(6, 10, 3, **kwargs).double()
    factors = tucker2_factors(conv.weight, ranks)
    seq = tucker2_conv(conv, factors)
    assert ["1x1" if m.kernel_size == (1, 1) else "core" for m in seq] == kinds
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64)
    expected = conv._conv_forward(x, tucker2_reconstruct(factors), conv.bias)
    torch.testing.assert_close(seq(x), expected, atol=1e-10, rtol=1e-10)
    out_hw = tuple(expected.shape[-2:])
    assert count_macs(seq, x[:1]) == tucker2_macs(conv, ranks, (11, 9), out_hw)
    assert count_params(seq) == tucker2_params(conv, ranks)
