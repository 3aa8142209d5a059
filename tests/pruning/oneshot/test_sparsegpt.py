"""SparseGPT against a textbook OBS implementation, and against magnitude on the same layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.pruning import MagnitudePruning, SparseGPT
from nnshrink.pruning.masks import is_nm, mask_from_scores, nm_mask_from_scores
from nnshrink.pruning.oneshot import relative_output_error, sparsegpt_prune


def _correlated_inputs(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Inputs with correlated features and a few large (outlier) ones, as in LLM layers."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5
    x = torch.randn(n, cols, generator=g, dtype=torch.float64) @ (torch.eye(cols) + 2 * mix)
    x[:, :: max(1, cols // 4)] *= 6.0
    return x


def _obs_textbook(W, H, sparsity, nm, block_size, damp):
    """Column-by-column Optimal Brain Surgeon with an explicit inverse of the remaining Hessian.

    At column i the not-yet-visited columns F = {i, ..., in-1} are free; pruning w_i updates
    them by δ_F = -w_i / [H_F⁻¹]_00 · [H_F⁻¹]_{:,0}. Masks: per block (unstructured) or per
    M-group (N:M) by the saliency w² / [H_F⁻¹]_00 of each column, as SparseGPT chooses them.
    """
    W = W.clone()
    H = H.clone() + damp * torch.diagonal(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)
    rows, cols = W.shape
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    inv_first = [torch.linalg.inv(H[i:, i:])[0] for i in range(cols)]  # row 0 of inv(H_F)
    d = torch.tensor([float(r[0]) for r in inv_first], dtype=torch.float64)
    for i in range(cols):
        if nm is None and i % block_size == 0:
            block = slice(i, min(i + block_size, cols))
            pruned[:, block] = ~mask_from_scores(W[:, block] ** 2 / d[block], sparsity)
        if nm is not None and i % nm[1] == 0:
            group = slice(i, i + nm[1])
            pruned[:, group] = ~nm_mask_from_scores(W[:, group] ** 2 / d[group], *nm)
        for r in range(rows):
            if pruned[r, i]:
                W[r, i:] -= W[r, i] / inv_first[i][0] * inv_first[i]
    return W, ~pruned


@pytest.mark.parametrize(
    ("nm", "block_size"), [(None, 16), (None, 8), (None, 3), ((2, 4), 8), ((1, 4), 4)]
)
def test_equals_textbook_obs_on_8x16_layer(nm, block_size):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(8, 16, generator=g, dtype=torch.float64)
    x = _correlated_inputs(200, 16)
    H = 2 * x.T @ x / x.shape[0]
    sparsity = 0.5 if nm is None else 1 - nm[0] / nm[1]
    fast, keep = sparsegpt_prune(W, H, sparsity, nm, block_size=block_size, damp=0.01)
    slow, slow_keep = _obs_textbook(W, H, sparsity, nm, block_size, 0.01)
    assert torch.equal(keep, slow_keep)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-10)
    assert bool((fast[~keep] == 0).all())
    if nm is not None:
        assert is_nm(keep, *nm) and int(keep.sum()) == 8 * 16 * nm[0] // nm[1]
    else:
        assert int((~keep).sum()) == sum(
            round(0.5 * 8 * len(range(i, min(i + block_size, 16))))
            for i in range(0, 16, block_size)
        )


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_reconstruction_error_below_magnitude(pattern):
    torch.manual_seed(0)
    layer = nn.Linear(64, 32).double()
    x = _correlated_inputs(512, 64)
    target = layer(x).detach()
    errors = {}
    for name, cfg in {
        "magnitude": MagnitudePruning(sparsity=0.5, pattern=pattern),
        "sparsegpt": SparseGPT(sparsity=0.5, pattern=pattern, exclude=()),
    }.items():
        pruned = copy.deepcopy(layer)
        ns.compress_(nn.Sequential(pruned), cfg, example_inputs=x)
        assert pruned.weight_mask.float().mean().item() == pytest.approx(0.5)
        with torch.no_grad():
            errors[name] = float(
                (pruned(x) - target).norm() ** 2 / (target - layer.bias).norm() ** 2
            )
    assert errors["sparsegpt"] < 0.7 * errors["magnitude"], errors


def test_summary_error_is_the_output_error():
    layer = nn.Linear(32, 16).double()
    x = _correlated_inputs(256, 32)
    before = layer.weight.detach().clone()
    result = ns.compress_(nn.Sequential(layer), SparseGPT(exclude=()), example_inputs=x)
    direct = ((x @ (before - layer.weight.detach()).T) ** 2).sum() / ((x @ before.T) ** 2).sum()
    assert result.summary.errors["0"] == pytest.approx(float(direct), rel=1e-9)
    assert relative_output_error(before, before, x.T @ x) == 0.0


def test_prior_mask_entries_stay_pruned():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(6, 8, generator=g, dtype=torch.float64)
    x = _correlated_inputs(100, 8)
    prior = torch.rand(6, 8, generator=g) > 0.3
    new, keep = sparsegpt_prune(W, x.T @ x, 0.5, block_size=4, prior_mask=prior)
    assert not bool((keep & ~prior).any()) and bool((new[~keep] == 0).all())


def test_dead_inputs_and_not_positive_definite():
    W = torch.ones(2, 4, dtype=torch.float64)
    x = torch.randn(50, 4, dtype=torch.float64)
    x[:, 1] = 0.0
    new, keep = sparsegpt_prune(W, x.T @ x, 0.5)
    assert not bool(keep[:, 1].any())  # an input that is always zero is pruned first
    bad = -torch.eye(4, dtype=torch.float64)
    with pytest.raises(ValueError, match="raise damp"):
        sparsegpt_prune(W, bad, 0.5, damp=0.0)


def test_config_validation_and_round_trip():
    cfg = SparseGPT(sparsity=0.6, block_size=64, damp=0.05, per_layer={"fc": {"pattern": "2:4"}})
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert SparseGPT().exclude == ("@last",)
    for bad in (
        dict(block_size=6, pattern="2:4"),
        dict(damp=-0.1),
        dict(sparsity=0.3, pattern="2:4"),
        dict(pattern="4:2"),
        dict(calibration_batches=0),
        dict(per_layer={"fc": 1.5}),
    ):
        with pytest.raises(ConfigError):
            SparseGPT(**bad)
