"""Criteria against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from nnshrink.pruning import criteria


def test_l1_l2_per_output_and_input_channel():
    w = torch.tensor([[[1.0, -2.0]], [[3.0, 4.0]]])  # (out=2, in=1, k=2)
    assert criteria.l1(w).tolist() == [3.0, 7.0]
    assert criteria.l2(w).tolist() == pytest.approx([math.sqrt(5), 5.0])
    assert criteria.l1(w, dim=2).tolist() == [4.0, 6.0]
    assert criteria.l2(torch.tensor([[3.0], [4.0]]), dim=1).tolist() == [5.0]


def test_bn_scale_is_abs_gamma():
    assert criteria.bn_scale(torch.tensor([-1.5, 0.0, 2.0])).tolist() == [1.5, 0.0, 2.0]


def test_taylor_sums_abs_weight_times_grad():
    w = torch.tensor([[1.0, -2.0], [0.5, 4.0]])
    g = torch.tensor([[3.0, 1.0], [-2.0, 0.25]])
    # channel 0: |3| + |-2| = 5; channel 1: |-1| + |1| = 2
    assert criteria.taylor(w, g).tolist() == [5.0, 2.0]
    assert criteria.taylor(w, g, dim=1).tolist() == [4.0, 3.0]
    with pytest.raises(ValueError, match="backward"):
        criteria.taylor(w, None)


def test_fpgm_is_summed_distance_to_other_filters():
    w = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    d01, d02, d12 = 5.0, 1.0, math.sqrt(9 + 9)
    expected = [d01 + d02, d01 + d12, d02 + d12]
    assert criteria.fpgm(w).tolist() == pytest.approx(expected)
    # the filter closest to the geometric median has the lowest score
    assert int(criteria.fpgm(w).argmin()) == 2


def test_random_is_seeded_and_uniform():
    a, b = criteria.random(1000, seed=5), criteria.random(1000, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, criteria.random(1000, seed=6))
    assert 0.0 <= float(a.min()) and float(a.max()) < 1.0 and abs(float(a.mean()) - 0.5) < 0.05


def test_scores_are_float64_and_do_not_track_grads():
    w = torch.randn(4, 3, requires_grad=True)
    for fn in (criteria.l1, criteria.l2, criteria.fpgm):
        s = fn(w)
        assert s.dtype == torch.float64 and not s.requires_grad and s.shape == (4,)
