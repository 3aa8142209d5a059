"""Rank selectors against closed forms, brute force and planted ranks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from nnshrink.lowrank.rank import (
    allocate_budget,
    energy_rank,
    evbmf,
    evbmf_tau_bar,
    largest_rank_within,
    lower_hull,
    ratio_rank,
    truncation_error,
    unfold,
)


def test_energy_rank_is_smallest_rank_reaching_the_energy():
    sigma = np.array([5.0, 3.0, 2.0, 1.0, 0.5])
    total = np.sum(sigma**2)
    for energy in (0.1, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0):
        r = energy_rank(sigma, energy)
        assert np.sum(sigma[:r] ** 2) >= energy * total - 1e-9
        assert r == 1 or np.sum(sigma[: r - 1] ** 2) < energy * total
    assert energy_rank(sigma[::-1], 0.9) == energy_rank(sigma, 0.9)  # order does not matter


def test_energy_one_gives_the_exact_rank_of_a_low_rank_matrix():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(30, 4, generator=g, dtype=torch.float64) @ torch.randn(
        4, 20, generator=g, dtype=torch.float64
    )
    assert energy_rank(torch.linalg.svdvals(m), 1.0) == 4


def test_ratio_rank_and_bad_values():
    assert ratio_rank(64, 0.25) == 16
    assert ratio_rank(10, 0.01) == 1
    assert ratio_rank(10, 1.0) == 10
    with pytest.raises(ValueError):
        ratio_rank(10, 0.0)
    with pytest.raises(ValueError):
        energy_rank([1.0], 1.5)


def test_truncation_error_matches_best_approximation():
    g = torch.Generator().manual_seed(2)
    m = torch.randn(12, 9, generator=g, dtype=torch.float64)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    approx = u[:, :3] * s[:3] @ vh[:3]
    assert truncation_error(s, 3) == pytest.approx(float((m - approx).norm()), rel=1e-12)


def test_unfold_shape_and_content():
    t = torch.arange(24.0).reshape(2, 3, 2, 2)
    u = unfold(t, 1)
    assert u.shape == (3, 8)
    assert torch.equal(u[1], t[:, 1].reshape(-1))


def test_tau_bar_matches_paper_constant_and_root():
    assert evbmf_tau_bar(1.0) == pytest.approx(2.5129, abs=1e-4)
    for alpha in (0.1, 0.5, 0.8):
        t = evbmf_tau_bar(alpha)
        assert math.log(t + 1) + alpha * math.log(t / alpha + 1) - t == pytest.approx(0, abs=1e-9)
        assert math.sqrt(alpha) < t < 2.5129 * math.sqrt(alpha) + 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(100, 80), (80, 100)])
def test_evbmf_recovers_planted_rank_and_noise(seed, shape):
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(shape[0], 7, generator=g) @ torch.randn(7, shape[1], generator=g)
    noisy = signal + 0.1 * torch.randn(*shape, generator=g)
    result = evbmf(noisy)
    assert result.rank == 7
    assert result.sigma2 == pytest.approx(0.01, rel=0.1)
    # survivors are shrunk towards zero, never inflated
    assert np.all(result.shrunk <= torch.linalg.svdvals(noisy)[:7].numpy() + 1e-9)


def test_evbmf_finds_nothing_in_pure_noise_and_respects_known_variance():
    g = torch.Generator().manual_seed(3)
    assert evbmf(0.1 * torch.randn(100, 80, generator=g)).rank == 0
    signal = torch.randn(60, 3, generator=g) @ torch.randn(3, 50, generator=g)
    assert evbmf(signal + 0.1 * torch.randn(60, 50, generator=g), sigma2=0.01).rank == 3


def test_largest_rank_within_is_exact():
    for budget in (0, 9, 10, 255, 10_000):
        r = largest_rank_within(lambda r: 10 * r, 64, budget)
        expected = max(1, min(64, budget // 10))
        assert r == expected


def _brute_force(curves, budget):
    best_err = math.inf
    for pick in itertools.product(*[range(len(c)) for c in curves]):
        macs = sum(c[i][0] for c, i in zip(curves, pick))
        err = sum(c[i][1] for c, i in zip(curves, pick))
        if macs <= budget and err < best_err:
            best_err = err
    return best_err


def test_allocate_budget_fits_and_matches_brute_force_on_convex_curves():
    rng = np.random.default_rng(0)
    for _ in range(20):
        curves = []
        for _ in range(3):
            # convex trade-off: error grows ever faster as MACs are removed
            steps = np.sort(rng.uniform(0.001, 1.0, size=4))
            errs = np.concatenate([[0.0], np.cumsum(steps)])
            macs = [100 - 20 * i for i in range(5)]
            curves.append(list(zip(macs, errs)))
        budget = float(rng.integers(120, 300))
        pick = allocate_budget(curves, budget)
        total = sum(c[i][0] for c, i in zip(curves, pick))
        assert total <= budget
        err = sum(c[i][1] for c, i in zip(curves, pick))
        assert err == pytest.approx(_brute_force(curves, budget), abs=1e-12)


def test_allocate_budget_cuts_the_cheapest_error_first():
    curves = [[(100, 0.0), (50, 0.01)], [(100, 0.0), (50, 0.5)]]
    assert allocate_budget(curves, 150) == [1, 0]
    assert allocate_budget(curves, 100) == [1, 1]
    assert allocate_budget(curves, 10) == [1, 1]  # cannot fit: everything at its cheapest


def test_allocate_budget_walks_the_hull_of_non_convex_curves():
    # a factorised layer's first option costs a large error for a small saving, then each
    # further step is cheap: a step-by-step greedy would drain one layer; the hull spreads
    layer = [(100, 0.0), (90, 0.3), (80, 0.32), (70, 0.34), (60, 0.36), (50, 0.38), (40, 0.6)]
    curves = [layer, layer]
    pick = allocate_budget(curves, 120)
    assert sum(curves[i][k][0] for i, k in enumerate(pick)) <= 120
    optimum = min(
        layer[a][1] + layer[b][1]
        for a in range(len(layer))
        for b in range(len(layer))
        if layer[a][0] + layer[b][0] <= 120
    )
    assert sum(curves[i][k][1] for i, k in enumerate(pick)) == pytest.approx(optimum)
    assert lower_hull(layer) == [0, 5, 6]
