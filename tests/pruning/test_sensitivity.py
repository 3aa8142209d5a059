"""Sensitivity scans: a synthetic metric with a known answer, table shape, derived ratios, plot."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnshrink import compress_
from nnshrink.pruning.sensitivity import SensitivityResult, layer_sensitivity
from nnshrink.train import evaluate

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COST = {"1": 0.1, "3": 1.0, "5": 0.02}  # metric lost per unit of sparsity in each layer


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 12), nn.ReLU(), nn.Linear(12, 4)
    )


def _synthetic_metric(model: nn.Module) -> float:
    """1 - sum(cost * sparsity): the exact table is then 1 - cost * ratio."""
    return 1.0 - sum(
        c * float((model.get_submodule(n).weight == 0).float().mean()) for n, c in COST.items()
    )


def test_table_matches_known_costs_and_model_is_untouched():
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = layer_sensitivity(model, _synthetic_metric, ratios=RATIOS)
    assert result.baseline == 1.0
    assert list(result.scores) == ["1", "3", "5"]
    for layer, row in result.scores.items():
        assert len(row) == len(RATIOS)
        expected = [
            1.0
            - COST[layer]
            * round(r * model.get_submodule(layer).weight.numel())
            / model.get_submodule(layer).weight.numel()
            for r in RATIOS
        ]
        assert row == pytest.approx(expected)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_derived_ratios_are_largest_within_tolerance():
    result = layer_sensitivity(_model(), _synthetic_metric, ratios=RATIOS)
    # drop = cost * ratio <= 0.05  ->  ratio <= 0.05 / cost
    assert result.derive_ratios(0.05) == pytest.approx({"1": 0.5, "3": 0.0, "5": 0.9})
    assert result.derive_ratios(0.1) == pytest.approx({"1": 0.9, "3": 0.1, "5": 0.9})
    cfg = result.to_config(0.05)
    model = _model()
    summary = compress_(model, cfg)
    assert {r.name: round(r.sparsity, 2) for r in summary.rows} == {
        "1.weight": 0.5,
        "3.weight": 0.0,
        "5.weight": 0.9,
    }


def test_contiguous_rule_skips_noisy_high_ratios():
    result = SensitivityResult(0.9, (0.2, 0.5, 0.8), {"a": (0.9, 0.7, 0.89), "b": (0.5, 0.9, 0.9)})
    assert result.derive_ratios(0.02) == {"a": 0.2, "b": 0.0}
    assert result.derive_ratios(0.02, contiguous=False) == {"a": 0.8, "b": 0.8}
    nan = SensitivityResult(0.9, (0.2, 0.5), {"a": (0.9, math.nan)})
    assert nan.derive_ratios(0.1) == {"a": 0.2}


def test_loader_evaluation_random_method_and_filter(tmp_path):
    g = torch.Generator().manual_seed(0)
    loader = [(torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g))]
    model = _model()
    result = layer_sensitivity(
        model, loader, ratios=(0.0, 0.5), method="random", filter_fn=lambda m, n: n != "5"
    )
    assert result.baseline == evaluate(model, loader)["top1"]
    assert list(result.scores) == ["1", "3"]
    assert all(row[0] == result.baseline for row in result.scores.values())  # ratio 0: no change
    table = result.to_markdown()
    assert len(table.splitlines()) == 2 + 1 + 2 and "| 1 |" in table
    path = tmp_path / "sens.png"
    result.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        SensitivityResult(
            **{
                **result.to_dict(),
                "ratios": tuple(result.ratios),
                "scores": {k: tuple(v) for k, v in result.scores.items()},
            }
        )
        == result
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="structured=True"):
        layer_sensitivity(_model(), _synthetic_metric, method="l1")
    with pytest.raises(ValueError, match="ratios"):
        layer_sensitivity(_model(), _synthetic_metric, ratios=(1.0,))
    with pytest.raises(ValueError, match="no"):
        layer_sensitivity(nn.Sequential(nn.ReLU()), _synthetic_metric)
    with pytest.raises(ValueError, match="derive_ratios"):
        SensitivityResult(1.0, (0.5,), {"a": (1.0,)}, "l1", True).to_config(0.1)


def test_structured_scan_removes_channels_of_one_layer(tiny_convnet, mnist_batch):
    model = tiny_convnet.eval()
    dense_out = model(mnist_batch)

    def width(m: nn.Module) -> float:  # a metric that shows how many channels survive
        return float(m.conv1.out_channels * 100 + m.conv2.out_channels)

    result = layer_sensitivity(
        model, width, ratios=(0.0, 0.5), method="l1", structured=True, example_inputs=mnist_batch
    )
    assert result.baseline == 816.0
    # conv1 and conv2 shrink alone; fc produces the model output, so it is left out
    assert result.scores == {"conv1": (816.0, 416.0), "conv2": (816.0, 808.0)}
    assert result.derive_ratios(10.0) == {"conv1": 0.0, "conv2": 0.5}
    torch.testing.assert_close(model(mnist_batch), dense_out)  # the caller's model is untouched
    with pytest.raises(ValueError, match="example_inputs"):
        layer_sensitivity(model, width, method="l1", structured=True)


def test_a_task_scores_the_loader_and_signs_the_drops():
    """An error rate (lower is better) is 1 - top-1: same scan, mirrored scores, equal drops."""
    from nnshrink.train.task import Task
    from tests.usercode import error_rate

    g = torch.Generator().manual_seed(0)
    loader = [(torch.randn(64, 16, generator=g), torch.randint(0, 4, (64,), generator=g))]
    model = _model()  # one model for both scans: only the metric differs
    top1 = layer_sensitivity(model, loader, ratios=(0.5, 0.9))
    error = layer_sensitivity(model, loader, ratios=(0.5, 0.9), task=Task(metric=error_rate))
    assert not error.higher_is_better and error.baseline == pytest.approx(1 - top1.baseline)
    for layer in top1.scores:
        assert error.drops()[layer] == pytest.approx(top1.drops()[layer], abs=1e-12)
    assert error.derive_ratios(0.05) == top1.derive_ratios(0.05)
    with pytest.raises(ValueError, match="task="):
        layer_sensitivity(_model(), _synthetic_metric, task=Task())
