"""Activation-aware SVD (ASVD, SVD-LLM) against plain SVD and against the theory."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.lowrank import (
    InputStatistics,
    LowRank,
    asvd_whitener,
    output_error,
    svd_factors,
    svdllm_whitener,
    whitened_svd_factors,
)
from nnshrink.lowrank.whitening import cholesky_with_damping


def _inputs(n: int = 512, cols: int = 48, seed: int = 0) -> torch.Tensor:
    """Correlated features with a few outliers, as LLM activations."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g, dtype=torch.float64) / cols**0.5
    x = torch.randn(n, cols, generator=g, dtype=torch.float64) @ (torch.eye(cols) + 1.5 * mix)
    x[:, :3] *= 10.0
    return x


def _stats(x: torch.Tensor) -> InputStatistics:
    stats = InputStatistics(x.shape[1])
    stats.add(x[: len(x) // 2])
    stats.add(x[len(x) // 2 :])  # two calls: the statistics accumulate
    return stats


def _out_err(w, a, b, x):
    return float(((x @ (w - a @ b).T) ** 2).sum() / ((x @ w.T) ** 2).sum()) ** 0.5


def test_svdllm_truncation_error_equals_the_discarded_spectrum():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(32, 48, generator=g, dtype=torch.float64)
    x = _inputs()
    whitener = svdllm_whitener(_stats(x))
    torch.testing.assert_close(whitener.chol @ whitener.chol.T, x.T @ x)  # no damping needed
    sigma = torch.linalg.svdvals(w @ whitener.chol)
    for rank in (4, 16, 31):
        a, b = whitened_svd_factors(w, rank, whitener)
        err = float(((x @ (w - a @ b).T) ** 2).sum())
        assert err == pytest.approx(float((sigma[rank:] ** 2).sum()), rel=1e-9)
    a, b = whitened_svd_factors(w, 32, whitener)  # full rank: exact
    torch.testing.assert_close(a @ b, w)


def test_activation_aware_beats_plain_svd_in_output_error():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(40, 48, generator=g, dtype=torch.float64)
    x = _inputs()
    stats = _stats(x)
    for rank in (8, 16):
        plain = _out_err(w, *svd_factors(w, rank), x)
        asvd = _out_err(w, *whitened_svd_factors(w, rank, asvd_whitener(stats)), x)
        svdllm = _out_err(w, *whitened_svd_factors(w, rank, svdllm_whitener(stats)), x)
        assert svdllm < asvd < plain, (rank, plain, asvd, svdllm)
        assert svdllm < 0.8 * plain
    # ASVD's scales are mean|x| ** alpha
    torch.testing.assert_close(asvd_whitener(stats, 0.5).scale, x.abs().mean(dim=0) ** 0.5)
    a, b = whitened_svd_factors(w, 4, svdllm_whitener(stats))
    assert output_error(w, a @ b, x.T @ x) == pytest.approx(_out_err(w, a, b, x), rel=1e-9)


def test_singular_gram_and_dead_features():
    x = torch.randn(6, 10, dtype=torch.float64)  # fewer rows than features: X Xᵀ is singular
    chol = cholesky_with_damping(x.T @ x)
    assert torch.isfinite(chol).all()
    torch.testing.assert_close(chol @ chol.T, x.T @ x, atol=1e-6, rtol=0)
    stats = InputStatistics(3)
    stats.add(torch.tensor([[1.0, 0.0, 4.0]]))
    assert asvd_whitener(stats, 1.0).scale.tolist() == [1.0, 1.0, 4.0]  # dead feature: floor


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(48, 64), nn.GELU(), nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 10)
    )


def test_compress_svdllm_lowers_model_output_error_at_the_same_rank():
    x = _inputs(256).float()
    dense = _mlp()
    target = dense(x).detach()
    errors, rows = {}, {}
    for whitening in ("none", "asvd", "svd-llm"):
        model = copy.deepcopy(dense)
        cfg = LowRank(
            method="svd", rank="ratio", ratio=0.25, whitening=whitening, exclude=("@last",)
        )
        result = ns.compress_(model, cfg, example_inputs=[x[:128], x[128:]])
        assert [tuple(m.weight.shape) for m in model[0]] == [(12, 48), (64, 12)]
        assert model[0][0].bias is None and model[4].__class__ is nn.Linear
        with torch.no_grad():
            errors[whitening] = float((model(x) - target).norm() / target.norm())
        rows[whitening] = result.summary.rows[0]
    assert errors["svd-llm"] < errors["none"] and errors["asvd"] < errors["none"], errors
    assert rows["none"].output_error is None and rows["svd-llm"].output_error is not None
    w = dense[0].weight.detach().double()
    approx = model[0][1].weight.detach().double() @ model[0][0].weight.detach().double()
    expected = output_error(w, approx, x.double().T @ x.double())
    assert rows["svd-llm"].output_error == pytest.approx(expected, rel=1e-6)


def test_whitened_spectrum_drives_energy_rank_and_budget():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(400, 6, generator=g) @ torch.randn(6, 48, generator=g)  # inputs of rank 6
    model = nn.Sequential(nn.Linear(48, 40))
    plain = ns.compress_(
        copy.deepcopy(model), LowRank(method="svd", rank="energy", energy=0.999), example_inputs=x
    )
    assert plain.summary.rows[0].ranks[0] > 20
    aware = ns.compress_(
        copy.deepcopy(model),
        LowRank(method="svd", rank="energy", energy=0.999, whitening="svd-llm"),
        example_inputs=x,
    )
    assert aware.summary.rows[0].ranks == (6,)  # W L has rank 6: the output needs no more
    two = nn.Sequential(nn.Linear(48, 48), nn.Linear(48, 48))
    cfg = LowRank(method="svd", rank="budget", budget_on="params", params_ratio=0.4,
                  whitening="svd-llm", round_to=4)  # fmt: skip
    report = ns.compress_(two, cfg, example_inputs=x).summary
    assert sum(r.params_after for r in report.rows) <= 0.4 * sum(
        r.params_before for r in report.rows
    )
    assert all(r.ranks[0] % 4 == 0 for r in report.decomposed)


def test_config_fields_and_errors():
    cfg = LowRank(method="svd", whitening="asvd", alpha=0.25, calibration_batches=4,
                  include=("fc.*",), per_layer={"fc1": {"rank": "ratio", "ratio": 0.5}})  # fmt: skip
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.warns(DeprecationWarning, match="include"):
        assert LowRank(layers=("a",)) == LowRank(include=("a",))
    for bad, match in (
        (dict(method="tucker", whitening="svd-llm"), "linear=True"),
        (dict(method="svd", whitening="pca"), "whitening"),
        (dict(method="svd", alpha=0.0), "alpha"),
        (dict(method="svd", per_layer={"fc": 0.5}), "mapping"),
        (dict(method="svd", per_layer={"fc": {"method": "cp"}}), "only"),
        (dict(method="svd", rank="budget", per_layer={"fc": {"ratio": 0.5}}), "budget"),
        (dict(method="svd", per_layer={"fc": {"ratio": 2.0}}), "ratio"),
    ):
        with pytest.raises(ConfigError, match=match):
            LowRank(**bad)
    model = _mlp()
    with pytest.raises(ValueError, match="calibration"):
        ns.compress_(model, LowRank(method="svd", whitening="svd-llm"))
    assert isinstance(model[0], nn.Linear)


def test_per_layer_rank_rules_and_exclude():
    model = _mlp()
    cfg = LowRank(method="svd", rank="ratio", ratio=0.5, exclude=("4",),
                  per_layer={"2": {"ratio": 0.25}})  # fmt: skip
    report = ns.compress_(model, cfg, example_inputs=torch.randn(2, 48)).summary
    assert {r.name: r.ranks for r in report.rows} == {"0": (24,), "2": (12,)}
