"""Schedules: exact values against the papers' formulas, computed by hand."""

from __future__ import annotations

import math

import pytest

from nnshrink.pruning import schedules


def test_one_shot():
    assert schedules.one_shot(0.9) == [0.9]
    with pytest.raises(ValueError):
        schedules.one_shot(1.0)


def test_iterative_geometric_prunes_same_fraction_of_survivors():
    steps = schedules.iterative(0.92, 4)
    assert steps[-1] == 0.92
    densities = [1.0] + [1 - s for s in steps]
    ratios = [b / a for a, b in zip(densities, densities[1:])]
    assert ratios == pytest.approx([0.08**0.25] * 4)


def test_iterative_linear_and_explicit_fractions():
    assert schedules.iterative(0.8, 4, spacing="linear") == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert schedules.iterative(0.75, [0.5, 1.0]) == pytest.approx([0.5, 0.75])
    # starting from a partly pruned model: density 0.5 -> 0.125 in two halving rounds
    assert schedules.iterative(0.875, 2, initial=0.5) == pytest.approx([0.75, 0.875])


@pytest.mark.parametrize("bad", [0, [0.5, 0.9], [0.5, 0.4, 1.0], [], [0.0, 1.0]])
def test_iterative_rejects_bad_steps(bad):
    with pytest.raises(ValueError):
        schedules.iterative(0.5, bad)


def test_agp_exact_values():
    # s_f = 0.8, s_i = 0, t0 = 10, n = 4, dt = 5: s_t = 0.8 * (1 - (1 - (t - t0) / 20) ** 3)
    kw = dict(final=0.8, initial=0.0, start_step=10, n_steps=4, frequency=5)
    expected = {
        0: 0.0,
        10: 0.0,
        14: 0.0,  # no pruning event yet after t0
        15: 0.8 * (1 - 0.75**3),
        17: 0.8 * (1 - 0.75**3),
        20: 0.8 * (1 - 0.5**3),
        25: 0.8 * (1 - 0.25**3),
        30: 0.8,
        1000: 0.8,
    }
    for t, value in expected.items():
        assert schedules.agp(t, **kw) == pytest.approx(value, abs=1e-12), t
    assert schedules.agp(15, **kw) == pytest.approx(0.4625)


def test_agp_with_initial_sparsity_and_monotone():
    kw = dict(final=0.9, initial=0.3, start_step=0, n_steps=10, frequency=1)
    values = [schedules.agp(t, **kw) for t in range(12)]
    assert values[0] == 0.3 and values[10] == 0.9
    assert all(b >= a for a, b in zip(values, values[1:]))
    # cubic: the first event removes the most (Zhu & Gupta prune fast early, slowly late)
    gains = [b - a for a, b in zip(values, values[1:11])]
    assert gains == sorted(gains, reverse=True)
    assert math.isclose(values[5], 0.9 - 0.6 * 0.5**3)


def test_agp_pruning_steps():
    assert schedules.agp_pruning_steps(start_step=10, n_steps=3, frequency=5) == [10, 15, 20, 25]


def test_at_progress_endpoints():
    for spacing in ("geometric", "linear"):
        assert schedules.at_progress(0.9, 0.0, spacing=spacing) == pytest.approx(0.0)
        assert schedules.at_progress(0.9, 1.0, spacing=spacing) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        schedules.at_progress(0.9, 0.5, spacing="cubic")
