"""Pruner policy and end-to-end oracles on the model zoo."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.metrics import count_macs
from nnshrink.pruning.structured import (
    StructuredPruner,
    StructuredPruning,
    StructuredPruningSummary,
    bn_l1_penalty,
)

from .helpers import check_equivalent, randomize_


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("lenet5", {}, (2, 1, 28, 28)),
        ("resnet20", {"shortcut": "A"}, (2, 1, 28, 28)),
        ("resnet20", {"shortcut": "B"}, (2, 1, 28, 28)),
        ("mobilenetv2", {"in_channels": 3}, (2, 3, 32, 32)),
    ],
)
def test_zoo_model_pruned_equals_zeroed_dense(name, kwargs, shape):
    model = ns.models.create(name, **kwargs)
    params = sum(p.numel() for p in model.parameters())
    check_equivalent(model, torch.randn(*shape))
    assert sum(p.numel() for p in model.parameters()) < 0.5 * params


def test_vgg16_pruned_equals_zeroed_dense():
    model = ns.models.create("vgg16", in_channels=1, input_size=28)
    check_equivalent(model, torch.randn(1, 1, 28, 28))


def test_resnet56_pruned_equals_zeroed_dense():
    # outputs reach ~1e3 after 27 residual additions: compare in float64 on a small input
    model = ns.models.create("resnet56", in_channels=1)
    check_equivalent(model, torch.randn(1, 1, 16, 16), dtype=torch.float64)


def test_lenet5_expected_shapes():
    model = ns.models.create("lenet5")
    ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=torch.randn(1, 1, 28, 28))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 10), (10, 25)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(25 * 16, 250), (250, 10)]


def test_resnet20_option_a_shapes_stay_consistent():
    model = ns.models.create("resnet20")
    ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=torch.randn(1, 1, 28, 28))
    for block in [*model.layer1, *model.layer2, *model.layer3]:
        assert block.conv1.out_channels == block.bn1.num_features == block.conv2.in_channels
        assert block.conv2.out_channels == block.bn2.num_features
        short = block.shortcut
        if hasattr(short, "in_channels"):  # ZeroPadShortcut
            assert short.in_channels == block.conv1.in_channels
            assert short.out_channels == block.conv2.out_channels
    assert model.fc.out_features == 10 and model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_pruned_model_is_an_ordinary_module(tmp_path):
    model = randomize_(ns.models.create("resnet20"))
    x = torch.randn(1, 1, 16, 16)
    ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=x)
    clone = copy.deepcopy(model)
    same_shape = copy.deepcopy(model)
    for p in same_shape.parameters():
        p.data.zero_()
    same_shape.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))
        torch.testing.assert_close(same_shape(x), model(x))


def test_pruned_model_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    model = randomize_(ns.models.create("lenet5"))
    x = torch.randn(1, 1, 28, 28)
    ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=x)
    path = tmp_path / "pruned.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4, rtol=1e-4)


def test_pruned_model_survives_a_checkpoint(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = randomize_(ns.models.create("resnet20"))  # option A: ZeroPadShortcut attrs change
    x = torch.randn(1, 1, 16, 16)
    ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=x)
    save_checkpoint(model, tmp_path / "pruned.nns")
    loaded, _ = load_checkpoint(tmp_path / "pruned.nns")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))


def test_pruned_model_trains():
    model = ns.models.create("resnet20").train()
    x = torch.randn(2, 1, 16, 16)
    ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=x[:1])
    assert model.training
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    opt.step()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())


def test_target_macs_is_reached_without_large_overshoot():
    model = ns.models.create("resnet20")
    x = torch.randn(1, 1, 16, 16)
    macs = count_macs(model, x)
    cfg = StructuredPruning(target_macs=macs // 2)
    summary = ns.compress_(model, cfg, example_inputs=x)
    assert summary.target_reached and summary.macs_after == count_macs(model, x)
    assert 0.35 * macs <= summary.macs_after <= macs // 2
    assert summary.steps >= 1 and summary.macs_before == macs


def test_target_macs_is_per_sample_whatever_the_batch():
    # a recipe passes a training batch, the CLI one sample: the same target means the same cut
    x = torch.randn(16, 1, 16, 16)
    cuts = []
    for batch in (x[:1], x):
        torch.manual_seed(0)  # the same weights for both runs
        model = ns.models.create("resnet20")
        per_sample = count_macs(model, x[:1])
        summary = ns.compress_(model, StructuredPruning(target_macs=per_sample // 2),
                               example_inputs=batch)  # fmt: skip
        assert summary.macs_before == per_sample
        assert summary.macs_after == count_macs(model, x[:1]) <= per_sample // 2
        cuts.append(summary.macs_after)
    assert cuts[0] == cuts[1]


def test_target_macs_unreachable_reports_it():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    summary = StructuredPruner(
        model, torch.randn(1, 1, 8, 8), StructuredPruning(target_macs=1)
    ).prune()
    assert summary.target_reached is False and model[0].out_channels == 1


def test_option_a_group_keeps_a_channel_of_every_stage_at_high_sparsity():
    # the option-A residual group spans stages (16 channels padded to 32 and 64); with these
    # weights the 10 best of its 64 channels all lay in stage 3, which emptied the stem conv
    x = torch.randn(1, 1, 16, 16)
    model = ns.models.create("resnet20", shortcut="A")
    summary = ns.compress_(model, StructuredPruning(sparsity=0.84375), example_inputs=x)
    assert model.conv1.out_channels >= 1 and model(x).shape == (1, 10)
    assert summary.macs_after < 0.1 * summary.macs_before


def test_activation_criterion_prunes_a_dead_unit_that_l2_keeps():
    # hidden unit 0 has the largest weights but never fires (its bias keeps the ReLU at zero)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[0].weight[0].mul_(10.0)
        model[0].bias[0] = -1e3
        model[2].weight[:, 0].mul_(10.0)
    x = torch.randn(64, 8)
    h = torch.relu(model[0](x)).detach().double()
    oracle = (model[2].weight.detach().double().pow(2).sum(0) * h.pow(2).sum(0)).sqrt()
    pruner = StructuredPruner(model, x, StructuredPruning(sparsity=0.5, criterion="activation"))
    (group,) = [g for g in pruner.groups() if g.prunable]
    torch.testing.assert_close(group.scores("activation", input_sq=pruner.input_statistics()),
                               oracle)  # fmt: skip
    kept = {
        crit: StructuredPruner(model, x, StructuredPruning(sparsity=0.5, criterion=crit))
        .plan()[0][1]
        .tolist()
        for crit in ("l2", "activation")
    }
    assert 0 in kept["l2"] and 0 not in kept["activation"]
    with pytest.raises(ValueError, match="input statistics"):
        group.scores("activation")


def _fake_latency(monkeypatch, ms_per_mmac: float = 1.0) -> list[int]:
    """Make the pruner's latency measurement a pure function of MACs (deterministic)."""
    from nnshrink.pruning.structured import latency_table

    measured: list[int] = []

    def fake(model, inputs, runtime, runs=20):
        macs = count_macs(model, inputs[:1])
        measured.append(macs)
        return macs / 1e6 * ms_per_mmac

    monkeypatch.setattr(latency_table, "measure_ms", fake)
    return measured


def test_target_latency_finds_the_smallest_sparsity_that_meets_it(monkeypatch):
    measured = _fake_latency(monkeypatch)
    x = torch.randn(1, 1, 16, 16)
    model = ns.models.create("resnet20")
    reference = copy.deepcopy(model)
    dense_ms = count_macs(model, x) / 1e6
    summary = ns.compress_(model, StructuredPruning(target_latency_ms=0.5 * dense_ms),
                           example_inputs=x)  # fmt: skip
    assert summary.target_reached and summary.latency_ms_before == pytest.approx(dense_ms)
    after_ms = count_macs(model, x) / 1e6
    assert summary.latency_ms_after == pytest.approx(after_ms) and after_ms <= 0.5 * dense_ms
    # the chosen trial is the least sparse one that met the target; every sparser-by-less one missed
    chosen = min(t["sparsity"] for t in summary.latency_trials if t["latency_ms"] <= 0.5 * dense_ms)
    assert all(t["latency_ms"] > 0.5 * dense_ms for t in summary.latency_trials
               if t["sparsity"] < chosen)  # fmt: skip
    # the trials pruned copies: the same one-shot sparsity on a fresh copy gives the same model
    again = copy.deepcopy(reference)
    ns.compress_(again, StructuredPruning(sparsity=chosen), example_inputs=x)
    assert count_macs(again, x) == count_macs(model, x)
    assert len(measured) == 1 + len(summary.latency_trials)


def test_target_latency_already_met_leaves_the_model_alone(monkeypatch):
    _fake_latency(monkeypatch)
    x = torch.randn(1, 1, 16, 16)
    model = ns.models.create("resnet20")
    state = copy.deepcopy(model.state_dict())
    summary = ns.compress_(model, StructuredPruning(target_latency_ms=1e9), example_inputs=x)
    assert summary.target_reached and summary.steps == 0 and not summary.latency_trials
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_target_latency_unreachable_prunes_the_most_and_says_so(monkeypatch):
    _fake_latency(monkeypatch)
    x = torch.randn(1, 1, 16, 16)
    model = ns.models.create("resnet20")
    dense = count_macs(model, x)
    with pytest.warns(UserWarning, match="out of reach"):
        summary = ns.compress_(model, StructuredPruning(target_latency_ms=1e-9), example_inputs=x)
    assert summary.target_reached is False and count_macs(model, x) < 0.2 * dense


def test_target_latency_config_errors():
    with pytest.raises(ConfigError, match="not both"):
        StructuredPruning(target_macs=10, target_latency_ms=1.0)
    with pytest.raises(ConfigError, match="positive"):
        StructuredPruning(target_latency_ms=0)
    with pytest.raises(ConfigError, match="latency_runtime"):
        StructuredPruning(target_latency_ms=1.0, latency_runtime="tensorrt")


@pytest.mark.slow
def test_target_latency_measured_for_real():
    torch.manual_seed(0)
    model = ns.models.create("resnet20", in_channels=1).eval()
    x = torch.randn(16, 1, 16, 16)
    from nnshrink.pruning.structured.latency_table import measure_ms

    dense_ms = min(measure_ms(model, x, "eager") for _ in range(3))
    target = 0.7 * dense_ms
    summary = ns.compress_(model, StructuredPruning(target_latency_ms=target, round_to=8),
                           example_inputs=x)  # fmt: skip
    assert summary.target_reached and summary.macs_after < summary.macs_before
    # timing noise on a shared machine: the pruned model is clearly faster than the dense one
    assert min(measure_ms(model, x, "eager") for _ in range(3)) < 0.9 * dense_ms


def test_global_ranking_prunes_the_weak_layer_more():
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 3)
    )
    with torch.no_grad():
        model[0].weight.copy_(torch.rand_like(model[0].weight) + 1.0)  # uniform norms
        scale = torch.tensor([1e-3] * 6 + [1.0, 1.0])[:, None, None, None]
        model[2].weight.mul_(scale)  # six weak filters in the second layer
    cfg = StructuredPruning(ratio=0.375, global_ranking=True, criterion="l1")
    StructuredPruner(model, torch.randn(1, 1, 12, 12), cfg).prune()
    assert model[2].out_channels == 2 and model[0].out_channels == 8


def test_round_to_per_layer_and_ignore():
    model = ns.models.create("vgg16", in_channels=1, input_size=28)
    x = torch.randn(1, 1, 28, 28)
    cfg = StructuredPruning(
        ratio=0.5, round_to=8, ignore=("features.0",), per_layer={"features\\.3": 0.75}
    )
    summary = ns.compress_(model, cfg, example_inputs=x)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 64  # ignored
    assert convs[1].out_channels == 16  # per_layer 0.75 of 64
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert convs[2].out_channels == 64 and convs[-1].out_channels == 256
    rows = {row.modules[0]: row for row in summary.groups}
    assert rows["features.3"].channels_before == 64 and rows["features.3"].channels_after == 16
    assert "features.0" not in rows


def test_filter_fn_excludes_layers():
    model = ns.models.create("lenet5")
    ns.compress_(
        model,
        StructuredPruning(ratio=0.5),
        example_inputs=torch.randn(1, 1, 28, 28),
        filter_fn=lambda m, name: name != "features.0",
    )
    assert model.features[0].out_channels == 20 and model.features[2].out_channels == 25


def test_taylor_needs_grads_and_uses_them():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    x = torch.randn(2, 1, 8, 8)
    cfg = StructuredPruning(ratio=0.5, criterion="taylor")
    with pytest.raises(ValueError, match="loss.backward"):
        StructuredPruner(model, x, cfg).plan()
    model(x).sum().backward()
    with torch.no_grad():
        model[0].weight.grad.zero_()
        model[0].weight.grad[[1, 3]] = 1.0  # only channels 1 and 3 have |w * g| > 0
    StructuredPruner(model, x, cfg).prune()
    expected = torch.ones(2, 1, 3, 3)
    assert torch.equal(model[0].weight.grad, expected)  # grads were sliced with the weights


def test_slimming_callback_penalises_bn_grads():
    from nnshrink.pruning.structured import BNSlimmingCallback

    bn = nn.BatchNorm1d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, -1.0, 0.5]))
    BNSlimmingCallback(0.25).on_after_backward(nn.Sequential(bn))
    torch.testing.assert_close(bn.weight.grad, torch.tensor([0.25, -0.25, 0.25]))


def test_bn_scale_and_slimming_penalty():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, -2.0, 0.05, 1.0]))
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    grad = model[1].weight.grad.clone()
    assert bn_l1_penalty(model, 0.5) == 1
    torch.testing.assert_close(model[1].weight.grad, grad + 0.5 * torch.tensor([1, -1, 1, 1.0]))
    StructuredPruner(
        model, torch.randn(1, 1, 8, 8), StructuredPruning(criterion="bn_scale")
    ).prune()
    torch.testing.assert_close(model[1].weight.data, torch.tensor([-2.0, 1.0]))


@pytest.mark.parametrize(
    "config",
    [
        StructuredPruning(criterion="l1"),
        StructuredPruning(criterion="fpgm"),
        StructuredPruning(criterion="random", seed=1),
        StructuredPruning(criterion="bn_scale", global_ranking=True, round_to=4),
    ],
)
def test_criteria_and_global_ranking_prune_equivalently(config):
    model = ns.models.create("resnet20", shortcut="B")
    check_equivalent(model, torch.randn(1, 1, 8, 8), config)


def test_iterative_steps_shrink_geometrically():
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 2, 3))
    pruner = StructuredPruner(model, torch.randn(1, 1, 8, 8), StructuredPruning(criterion="l1"))
    rows = pruner.step(0.5)
    assert [(r.channels_before, r.channels_after) for r in rows] == [(16, 8)]
    pruner.step(0.5)
    assert model[0].out_channels == model[2].in_channels == 4


def test_summary_and_config_round_trip():
    cfg = StructuredPruning(
        ratio=0.25,
        criterion="fpgm",
        global_ranking=True,
        target_macs=1000,
        round_to=4,
        ignore=("fc", "layer1\\..*"),
        per_layer={"conv1": 0.1},
        seed=3,
    )
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "structured-pruning"}) == StructuredPruning()
    assert StructuredPruning().per_layer == {} and StructuredPruning().per_layer is not (
        StructuredPruning().per_layer
    )
    model = ns.models.create("lenet5")
    summary = ns.compress_(
        model, StructuredPruning(), example_inputs=torch.randn(1, 1, 28, 28)
    ).summary
    assert isinstance(summary, StructuredPruningSummary)
    d = summary.to_dict()
    assert d["params_after"] == sum(p.numel() for p in model.parameters())
    assert d["macs_after"] < d["macs_before"] and d["params_after"] < d["params_before"]
    assert [r["channels_before"] for r in d["groups"]] == [20, 50, 500]
    assert [r["channels_after"] for r in d["groups"]] == [10, 25, 250]


@pytest.mark.parametrize(
    "bad",
    [
        {"ratio": 1.0},
        {"ratio": -0.1},
        {"round_to": 0},
        {"target_macs": 0},
        {"per_layer": {"x": 1.5}},
        {"ignore": ["("]},
        {"criterion": "l3"},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "structured-pruning", **bad})


def test_handler_needs_example_inputs():
    with pytest.raises(ValueError, match="example_inputs"):
        ns.compress_(ns.models.create("lenet5"), StructuredPruning())


def test_target_latency_refuses_keyword_inputs_and_leaves_the_model_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="positional"):
        ns.compress_(model, StructuredPruning(target_latency_ms=1.0),
                     example_inputs={"input": torch.randn(2, 4)})  # fmt: skip
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
