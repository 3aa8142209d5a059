"""Budget checks are pure functions: test them against hand-computed cases."""

from __future__ import annotations

import pytest

from nnshrink.advise import (
    Budget,
    BudgetError,
    Measurement,
    drop_points,
    excess,
    meets,
    parse_size,
    resource_ok,
    violations,
)


def test_violations_lists_every_broken_limit():
    budget = Budget(max_bytes=1000, max_latency_ms=2.0, max_macs=10**6, max_drop=0.5)
    m = Measurement(top1=0.97, bytes=1500, latency_ms=1.0, macs=2 * 10**6)
    broken = {v.key: v for v in violations(budget, m, baseline_top1=0.98)}
    assert set(broken) == {"bytes", "macs", "drop_points"}
    assert broken["bytes"].excess == pytest.approx(0.5)
    assert broken["macs"].excess == pytest.approx(1.0)
    assert broken["drop_points"].value == pytest.approx(1.0)
    assert broken["drop_points"].excess == pytest.approx(1.0)  # (1.0 - 0.5) / 0.5
    assert excess(budget, m, 0.98) == pytest.approx(2.5)
    assert not meets(budget, m, 0.98)
    assert "bytes 1,500 > 1,000" in [str(v) for v in broken.values()]


def test_meets_at_the_limit_and_missing_values_violate():
    budget = Budget(max_bytes=1000, max_drop=1.0)
    assert meets(budget, Measurement(top1=0.97, bytes=1000), 0.98)
    assert not meets(budget, Measurement(top1=0.97, bytes=1001), 0.98)
    assert not meets(budget, Measurement(top1=None, bytes=10), 0.98)
    assert not meets(Budget(max_latency_ms=1.0), Measurement(bytes=10))
    assert excess(budget, Measurement(top1=0.98, bytes=10), 0.98) == 0


def test_resource_ok_ignores_accuracy_and_allows_slack():
    budget = Budget(max_bytes=100, max_drop=0.1)
    assert resource_ok(budget, Measurement(top1=0.1, bytes=100))
    assert not resource_ok(budget, Measurement(top1=0.99, bytes=105))
    assert resource_ok(budget, Measurement(bytes=105), slack=0.1)


def test_drop_points():
    assert drop_points(0.99, 0.985) == pytest.approx(0.5)
    assert drop_points(None, 0.9) is None


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
