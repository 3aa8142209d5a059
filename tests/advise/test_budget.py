"""Budget checks are pure functions: test them against hand-computed cases."""

from __future__ import annotations

import pytest

from nnshrink.advise import (
    Budget,
    BudgetError,
    Measurement,
    drop_points,
    excess,
    goodness,
    meets,
    metric_drop,
    parse_size,
    resource_ok,
    violations,
)


def test_violations_lists_every_broken_limit():
    budget = Budget(max_bytes=1000, max_latency_ms=2.0, max_macs=10**6, max_drop=0.005)
    m = Measurement(score=0.97, bytes=1500, latency_ms=1.0, macs=2 * 10**6)
    broken = {v.key: v for v in violations(budget, m, baseline_score=0.98)}
    assert set(broken) == {"bytes", "macs", "drop"}
    assert broken["bytes"].excess == pytest.approx(0.5)
    assert broken["macs"].excess == pytest.approx(1.0)
    assert broken["drop"].value == pytest.approx(0.01)  # in the metric's units (a fraction)
    assert broken["drop"].excess == pytest.approx(1.0)  # (0.01 - 0.005) / 0.005
    assert excess(budget, m, 0.98) == pytest.approx(2.5)
    assert not meets(budget, m, 0.98)
    assert "bytes 1,500 > 1,000" in [str(v) for v in broken.values()]


def test_the_drop_follows_the_metric_direction():
    """Lower is better (an error rate, a loss): a rise is the drop; a fall is no drop."""
    budget = Budget(max_macs=10, max_drop=0.02)
    worse, better = Measurement(score=0.13, macs=1), Measurement(score=0.05, macs=1)
    assert metric_drop(0.10, 0.13, higher_is_better=False) == pytest.approx(0.03)
    assert [v.key for v in violations(budget, worse, 0.10, higher_is_better=False)] == ["drop"]
    assert meets(budget, better, 0.10, higher_is_better=False)
    assert not meets(budget, better, 0.10)  # read as higher-is-better it lost 0.05
    assert str(metric_drop(0.5, 0.5, higher_is_better=False)) == "0.0"  # not "-0.0"
    assert goodness(0.1, False) > goodness(0.3, False) > goodness(None, False)


def test_a_fraction_metric_refuses_a_drop_in_points():
    Budget(max_bytes=1, max_drop=0.99).check_drop_units("top1")
    Budget(max_bytes=1, max_drop=3.0).check_drop_units("mse")  # its own units: anything goes
    with pytest.raises(BudgetError, match=r"give 0.5 \(--max-drop 0.5\)"):
        Budget(max_bytes=1, max_drop=50).check_drop_units("top1")


def test_meets_at_the_limit_and_missing_values_violate():
    budget = Budget(max_bytes=1000, max_drop=0.01)
    assert meets(budget, Measurement(score=0.97, bytes=1000), 0.98)
    assert not meets(budget, Measurement(score=0.97, bytes=1001), 0.98)
    assert not meets(budget, Measurement(score=None, bytes=10), 0.98)
    assert not meets(Budget(max_latency_ms=1.0), Measurement(bytes=10))
    assert excess(budget, Measurement(score=0.98, bytes=10), 0.98) == 0


def test_resource_ok_ignores_accuracy_and_allows_slack():
    budget = Budget(max_bytes=100, max_drop=0.1)
    assert resource_ok(budget, Measurement(score=0.1, bytes=100))
    assert not resource_ok(budget, Measurement(score=0.99, bytes=105))
    assert resource_ok(budget, Measurement(bytes=105), slack=0.1)


def test_deprecated_points_and_top1_still_answer():
    with pytest.warns(DeprecationWarning, match="metric_drop"):
        assert drop_points(0.99, 0.985) == pytest.approx(0.5)
    with pytest.warns(DeprecationWarning, match="Measurement.score"):
        assert Measurement(score=0.9).top1 == 0.9


@pytest.mark.parametrize(
    "text,expected",
    [("20KB", 20_000), ("1.5MB", 1_500_000), ("64KiB", 65_536), ("300", 300), ("2 kb", 2000),
     (512, 512), ("1GB", 10**9)],
)  # fmt: skip
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "KB", "20XB", "-1KB", "1.2.3MB"])
def test_parse_size_rejects_garbage(bad):
    with pytest.raises(BudgetError, match="cannot read size"):
        parse_size(bad)


def test_budget_validation_and_round_trip():
    b = Budget(max_bytes=20_000, max_latency_ms=1.5, batch_size=4, threads=2, runtime="eager",
               max_macs=10**6, max_drop=0.3, time_limit_s=60, finetune=False)  # fmt: skip
    assert Budget.from_dict(b.to_dict()) == b
    assert set(b.resource_limits) == {"bytes", "latency_ms", "macs"}
    for kwargs in ({"max_bytes": 0}, {"max_drop": -1}, {"threads": 0}, {"runtime": "tensorrt"},
                   {"time_limit_s": 0}):  # fmt: skip
        with pytest.raises(BudgetError):
            Budget(**kwargs)
    with pytest.raises(BudgetError, match="unknown key"):
        Budget.from_dict({"max_byte": 3})
    with pytest.raises(BudgetError, match="at least one of"):
        Budget(max_drop=1.0).require_limit()
