"""Rank planning: MAC models against the counters, rank rules, Tucker options and budget curves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.lowrank import LowRank
from nnshrink.lowrank.planning import budget_curve, plan_layer, select_ranks, tucker_options
from nnshrink.lowrank.tucker import tucker2_factors, tucker2_reconstruct


def _conv_plan(c_out=40, c_in=24, hw=8, method="tucker"):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    return plan_layer("c", conv, method, ((2, c_in, hw, hw), (2, c_out, hw, hw)))


def test_plan_counts_dense_macs_of_the_batch():
    plan = _conv_plan()
    assert plan.macs_before == 2 * 8 * 8 * 24 * 40 * 9
    assert plan.macs_of((40, 24)) == plan.macs_before  # full-rank factors fold into the core
    n = 2 * 8 * 8  # batch x output pixels; (20, 12): 1x1 24->12, 3x3 12->20, 1x1 20->40
    assert plan.macs_of((20, 12)) == n * (24 * 12 + 9 * 12 * 20 + 20 * 40)


def test_tucker_budget_options_trade_macs_for_error_monotonically():
    plan = _conv_plan()
    options, ranks = budget_curve(plan)
    assert options[0] == (plan.macs_before, 0.0) and ranks[0] == ()
    macs = [m for m, _ in options]
    errors = [e for _, e in options]
    assert macs == sorted(macs, reverse=True) and len(set(macs)) == len(macs)
    assert errors == sorted(errors) and len(set(errors)) == len(errors)
    assert any(r[0] == 40 for r in ranks[1:]) and any(r[1] == 24 for r in ranks[1:])
    assert all(plan.macs_of(r) == m for r, (m, _) in zip(ranks[1:], options[1:]))


def test_tucker_option_error_is_exact_when_one_mode_is_kept_whole():
    plan = _conv_plan()
    w = plan.module.weight.detach().double()
    checked = 0
    for _, err, ranks in tucker_options(plan):
        if ranks[0] == 40 and ranks[1] in (4, 12, 20):  # output mode whole: Eckart-Young
            approx = tucker2_reconstruct(tucker2_factors(w, ranks))
            true = float(((approx - w).norm() / w.norm()) ** 2)
            assert err == pytest.approx(true, rel=1e-9, abs=1e-12)
            checked += 1
    assert checked == 3


@pytest.mark.parametrize("method", ["tucker", "cp"])
def test_macs_target_holds_after_rounding(method):
    plan = _conv_plan(64, 48, method=method)
    ranks = select_ranks(plan, LowRank(method=method, rank="macs", macs_ratio=0.5, round_to=16))
    assert all(r % 16 == 0 for r in ranks)
    assert plan.macs_of(ranks) <= 0.5 * plan.macs_before


def test_svd_rules_pick_the_expected_rank():
    torch.manual_seed(0)
    u, v = torch.randn(64, 5), torch.randn(5, 48)
    linear = nn.Linear(48, 64)
    with torch.no_grad():
        linear.weight.copy_(u @ v)
    plan = plan_layer("fc", linear, "svd", ((3, 48), (3, 64)))
    assert plan.macs_before == 3 * 48 * 64
    assert select_ranks(plan, LowRank(method="svd", rank="energy", energy=0.999999)) == (5,)
    assert select_ranks(plan, LowRank(method="svd", rank="ratio", ratio=0.25)) == (12,)
    (r,) = select_ranks(plan, LowRank(method="svd", rank="macs", macs_ratio=0.5))
    assert plan.macs_of((r,)) <= 0.5 * plan.macs_before < plan.macs_of((r + 1,))


@pytest.mark.parametrize("method", ["svd", "tucker", "cp"])
def test_params_of_counts_the_built_layer_and_the_params_rule_uses_it(method):
    from nnshrink.core import compress_
    from nnshrink.metrics import count_params

    torch.manual_seed(0)
    if method == "svd":
        layer, shapes = nn.Linear(48, 64), ((3, 48), (3, 64))
    else:
        layer, shapes = nn.Conv2d(24, 40, 3, padding=1), ((1, 24, 8, 8), (1, 40, 8, 8))
    plan = plan_layer("l", layer, method, shapes, cost="params")
    assert plan.cost_before == plan.params_before == count_params(layer)
    cfg = LowRank(method=method, rank="params", params_ratio=0.4, n_iter_max=2,
                  linear=method != "svd")  # fmt: skip
    ranks = select_ranks(plan, cfg)
    assert plan.cost_of(ranks) == plan.params_of(ranks) <= 0.4 * plan.params_before
    model = nn.Sequential(layer)
    x = torch.randn(*shapes[0])
    (row,) = compress_(model, cfg, example_inputs=x).decomposed
    assert row.ranks == ranks
    assert count_params(model) == plan.params_of(ranks)  # oracle: the counter on the built layer
    if method != "tucker":  # one rank: the largest that fits
        bigger = (ranks[0] + 1,)
        assert plan.params_of(bigger) > 0.4 * plan.params_before
