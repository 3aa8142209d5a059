import pytest
import torch

from nnshrink.compact.fit import fit_crelu, fit_rotation, group_rotations, pair_filters
from nnshrink.compact.transferred import rot90_filters


def _pairs_bank(seed=0, scales=None):
    """8 filters that are exact ± pairs, shuffled; returns (weight, learned, true pairs)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    bank = torch.cat([v, -v])
    if scales is not None:
        bank = bank * torch.as_tensor(scales, dtype=torch.float64).view(-1, 1, 1, 1)
    perm = torch.randperm(8, generator=g)
    return bank[perm], perm


def test_pair_filters_finds_exact_pairs_and_takes_the_most_negative_first():
    weight, perm = _pairs_bank()
    pos = torch.argsort(perm)  # pos[i] = where original filter i went
    truth = sorted(tuple(sorted((int(pos[i]), int(pos[i + 4])))) for i in range(4))
    assert sorted(pair_filters(weight)) == truth
    # greedy: the first pair is the global minimum of the cosine matrix (brute force)
    w = torch.randn(6, 10, dtype=torch.float64)
    unit = w / w.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    best = min((cos[i, j].item(), (i, j)) for i in range(6) for j in range(i + 1, 6))
    assert pair_filters(w)[0] == best[1]
    with pytest.raises(ValueError, match="even"):
        pair_filters(torch.randn(3, 4))


def test_crelu_fit_is_the_least_squares_pair_average_and_exact_on_exact_pairs():
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64)
    b = torch.randn(6, dtype=torch.float64)
    fit = fit_crelu(w, b)
    pairs = pair_filters(w)
    for j, (a, c) in enumerate(pairs):
        torch.testing.assert_close(fit.weight[j], (w[a] - w[c]) / 2)  # direct formula
        torch.testing.assert_close(fit.bias[j], (b[a] - b[c]) / 2)
    assert fit.order.tolist() == [a for a, _ in pairs] + [c for _, c in pairs]
    weight, _ = _pairs_bank()
    exact = fit_crelu(weight)
    applied = torch.cat([exact.weight, -exact.weight])
    torch.testing.assert_close(applied, weight[exact.order])
    torch.testing.assert_close(exact.cosine, torch.ones(8, dtype=torch.float64))


def test_scale_free_crelu_fit_reports_each_channels_gain():
    # exact pairs at different scales: directions match exactly, gains are the scale ratios
    weight, perm = _pairs_bank(scales=[1, 2, 3, 4, 0.5, 1, 1.5, 2])
    fit = fit_crelu(weight, scale_free=True)
    applied = torch.empty_like(weight)
    applied[fit.order] = torch.cat([fit.weight, -fit.weight])
    torch.testing.assert_close(applied, weight * fit.gain.view(-1, 1, 1, 1))
    torch.testing.assert_close(fit.cosine, torch.ones(8, dtype=torch.float64))
    assert not torch.allclose(fit.gain, torch.ones(8, dtype=torch.float64))


def test_rotation_groups_and_fit_recover_an_exact_rotated_bank():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64)
    bank = torch.cat([rot90_filters(v, r) for r in range(4)])  # index r*3 + o
    perm = torch.randperm(12, generator=g)
    weight = bank[perm]
    groups = group_rotations(weight)
    assert sorted(i for grp in groups for i in grp) == list(range(12))
    for grp in groups:  # member r is the anchor rotated r times (torch.rot90 as the oracle)
        for r in range(4):
            torch.testing.assert_close(weight[grp[r]], torch.rot90(weight[grp[0]], r, dims=(1, 2)))
    fit = fit_rotation(weight, torch.zeros(12, dtype=torch.float64))
    expanded = torch.stack([torch.rot90(fit.weight, r, dims=(2, 3)) for r in range(4)], dim=1)
    torch.testing.assert_close(expanded.reshape(12, 2, 3, 3), weight[fit.order])
    torch.testing.assert_close(fit.cosine, torch.ones(12, dtype=torch.float64))
    with pytest.raises(ValueError, match="multiple of 4"):
        group_rotations(torch.randn(6, 1, 3, 3))


def test_rotation_fit_averages_the_rotated_back_members():
    w = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    fit = fit_rotation(w, b)
    grp = group_rotations(w)[0]
    expected = sum(torch.rot90(w[grp[r]], -r, dims=(1, 2)) for r in range(4)) / 4
    torch.testing.assert_close(fit.weight[0], expected)
    torch.testing.assert_close(fit.bias, torch.tensor([3.0], dtype=torch.float64))
    assert (fit.cosine <= 1 + 1e-9).all() and fit.weight.dtype == torch.float64
