"""Channel counts from a per-layer latency table: a staircase table is followed exactly; the
real table times layers alone and caches them."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.pruning import StructuredPruning
from nnshrink.pruning.structured import latency_table
from nnshrink.pruning.structured.latency_table import LatencyTable, count_window


def _staircase(monkeypatch) -> list[tuple]:
    """Layer time = ceil(c_in / 8) * ceil(c_out / 8): kernels that work in blocks of 8."""
    timed: list[tuple] = []

    def fake(self, module, in_shape, c_in, c_out):
        timed.append((module.kernel_size, in_shape, c_out))
        return float(math.ceil(c_in / 8) * math.ceil(c_out / 8))

    monkeypatch.setattr(LatencyTable, "_time", fake)
    return timed


def _chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 40, 3, padding=1), nn.BatchNorm2d(40), nn.ReLU(),
        nn.Conv2d(40, 40, 3, padding=1), nn.BatchNorm2d(40), nn.ReLU(),
        nn.Conv2d(40, 10, 1),
    )  # fmt: skip


@pytest.mark.parametrize(("sparsity", "planned", "chosen"), [(0.55, 18, 16), (0.45, 22, 24)])
def test_counts_round_to_the_nearest_step_top_with_the_best_channels(
    monkeypatch, sparsity, planned, chosen
):
    timed = _staircase(monkeypatch)
    x = torch.randn(4, 3, 8, 8)
    plain, table = _chain(), _chain()
    ns.compress_(plain, StructuredPruning(sparsity=sparsity), example_inputs=x)
    summary = ns.compress_(
        table, StructuredPruning(sparsity=sparsity, latency_table=True), example_inputs=x
    )
    # 17..24 channels cost the same three blocks of 8: 18 drops to 16, 22 fills up to 24
    assert plain[0].out_channels == plain[3].out_channels == planned
    assert table[0].out_channels == table[3].out_channels == chosen
    rows = summary.latency_table
    assert [(r["planned"], r["chosen"]) for r in rows] == [(planned, chosen)] * 2
    assert timed and len(timed) == len(set(timed))  # each layer signature timed once
    # the kept channels are the best-scored ones (same ranking, another count)
    dense = _chain()
    order = torch.argsort(dense[0].weight.flatten(1).norm(dim=1), descending=True)
    assert torch.allclose(table[0].weight, dense[0].weight[order[:chosen].sort().values])
    assert table(x).shape == (4, 10, 8, 8)


def test_counts_stay_near_the_plan_and_respect_round_to(monkeypatch):
    _staircase(monkeypatch)
    x = torch.randn(2, 3, 8, 8)
    for sparsity in (0.1, 0.3, 0.5, 0.7):
        plain, table = _chain(), _chain()
        ns.compress_(plain, StructuredPruning(sparsity=sparsity, round_to=4), example_inputs=x)
        ns.compress_(table, StructuredPruning(sparsity=sparsity, round_to=4, latency_table=True),
                     example_inputs=x)  # fmt: skip
        for i in (0, 3):
            n, m = plain[i].out_channels, table[i].out_channels
            lo, hi = count_window(n, 40)
            assert lo <= m <= hi and (m % 4 == 0 or m == 40)
            assert m % 8 == 0 or m == 40  # the top of a step of the staircase
            assert abs(m - n) <= 4  # the nearest one


def test_smooth_cost_keeps_the_planned_count(monkeypatch):
    monkeypatch.setattr(LatencyTable, "_time", lambda self, m, shape, ci, co: float(ci * co))
    x = torch.randn(2, 3, 8, 8)
    plain, table = _chain(), _chain()
    ns.compress_(plain, StructuredPruning(sparsity=0.5), example_inputs=x)
    ns.compress_(table, StructuredPruning(sparsity=0.5, latency_table=True), example_inputs=x)
    assert abs(table[0].out_channels - plain[0].out_channels) <= 1


def test_real_table_times_layers_alone_and_caches(monkeypatch):
    model = _chain()
    table = LatencyTable(model, torch.randn(2, 3, 8, 8), runs=3)
    assert table.shapes["3"] == (2, 40, 8, 8) and not table.knows("1")  # BatchNorm: not timed
    first = table.layer_ms("3", c_in=24, c_out=16)
    assert first > 0
    monkeypatch.setattr(latency_table, "measure_ms", lambda *a, **k: pytest.fail("re-timed"))
    assert table.layer_ms("3", c_in=24, c_out=16) == first
    with pytest.raises(KeyError):
        table.layer_ms("1", 4, 4)


def test_with_target_latency_the_table_is_measured_once_for_all_trials(monkeypatch):
    timed = _staircase(monkeypatch)  # (LatencyTable._time is faked; this fakes the model's time)
    monkeypatch.setattr(
        latency_table, "measure_ms", lambda m, x, rt, runs=20: ns.metrics.count_macs(m, x) / 1e6
    )
    x = torch.randn(1, 3, 8, 8)
    model = _chain()
    dense_ms = ns.metrics.count_macs(model, x) / 1e6
    summary = ns.compress_(
        model,
        StructuredPruning(target_latency_ms=0.6 * dense_ms, latency_table=True),
        example_inputs=x,
    )
    assert summary.target_reached and len(summary.latency_trials) >= 3
    assert len(timed) == len(set(timed))  # shared cache across the bisection's pruned copies
    assert summary.latency_table and all(r["chosen"] % 8 == 0 for r in summary.latency_table)
