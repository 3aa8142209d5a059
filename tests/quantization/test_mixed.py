import itertools

import pytest
import torch

import nnshrink as ns
from nnshrink.core import Config
from nnshrink.quantization.mixed import (
    MixedPrecision,
    allocate_bits,
    layer_sensitivity,
    quantize_weight,
)


def _brute_force(sens, sizes, budget):
    names = list(sizes)
    best, best_cost = None, float("inf")
    for combo in itertools.product(*[sorted(sens[n]) for n in names]):
        if sum(b * sizes[n] for b, n in zip(combo, names)) > budget:
            continue
        cost = sum(sens[n][b] for b, n in zip(combo, names))
        if cost < best_cost:
            best, best_cost = dict(zip(names, combo)), cost
    return best, best_cost


def test_allocate_bits_respects_budget_and_is_near_optimal():
    torch.manual_seed(0)
    names = ["a", "b", "c", "d"]
    sizes = {"a": 100, "b": 400, "c": 50, "d": 250}
    # convex, decreasing sensitivities (error ~ scale * 4^-bits, as for uniform quantization)
    scales = {"a": 5.0, "b": 1.0, "c": 20.0, "d": 0.5}
    sens = {n: {b: scales[n] * 4.0 ** (-b) for b in (2, 4, 6, 8)} for n in names}
    total = sum(sizes.values())
    for avg in (2.0, 3.0, 4.5, 6.0, 8.0):
        bits = allocate_bits(sens, sizes, avg * total)
        assert sum(bits[n] * sizes[n] for n in names) <= avg * total
        _, opt = _brute_force(sens, sizes, avg * total)
        got = sum(sens[n][bits[n]] for n in names)
        assert got <= opt * 1.5 + 1e-12
    assert allocate_bits(sens, sizes, 8 * total) == {n: 8 for n in names}


def test_allocate_bits_gives_sensitive_layers_more_bits():
    sens = {"robust": {8: 0.0, 4: 0.01, 2: 0.1}, "fragile": {8: 0.0, 4: 1.0, 2: 10.0}}
    bits = allocate_bits(sens, {"robust": 100, "fragile": 100}, budget_bits=1000)
    assert bits["fragile"] > bits["robust"]


def test_allocate_bits_infeasible():
    with pytest.raises(ValueError, match="budget"):
        allocate_bits({"a": {4: 0.0, 8: 0.0}}, {"a": 10}, budget_bits=30)


def test_layer_sensitivity_decreases_with_bits(tiny_convnet):
    x = torch.randn(4, 1, 28, 28)
    for inputs in (x, None):
        sens = layer_sensitivity(tiny_convnet, (2, 4, 8), inputs)
        assert set(sens) == {"conv1", "conv2", "fc"}
        for per_bits in sens.values():
            assert per_bits[2] > per_bits[4] > per_bits[8] >= 0


def test_mixed_precision_handler(tiny_convnet):
    cfg = MixedPrecision(bits=4.0, choices=(2, 4, 8))
    assert Config.from_dict(cfg.to_dict()) == cfg
    rows = ns.compress_(tiny_convnet, cfg, example_inputs=torch.randn(4, 1, 28, 28))
    total = sum(r["params"] for r in rows)
    assert sum(r["bits"] * r["params"] for r in rows) <= 4.0 * total
    for r in rows:
        w = tiny_convnet.get_submodule(r["name"]).weight
        per_channel_levels = max(len(torch.unique(w[i])) for i in range(w.shape[0]))
        assert per_channel_levels <= 2 ** r["bits"] - 1


def test_quantize_weight_is_idempotent():
    w = torch.randn(4, 9)
    q = quantize_weight(w, 4)
    assert torch.allclose(quantize_weight(q, 4), q, atol=1e-6)


def test_mixed_precision_validation():
    with pytest.raises(ns.ConfigError):
        MixedPrecision(bits=1.0, choices=(2, 4))
    with pytest.raises(ns.ConfigError):
        MixedPrecision(choices=(1, 4))


def test_avg_bits_is_a_deprecated_alias():
    with pytest.warns(DeprecationWarning, match="avg_bits"):
        cfg = MixedPrecision(avg_bits=4.0)
    assert cfg == MixedPrecision(bits=4.0) and cfg.avg_bits == 4.0
    with pytest.warns(DeprecationWarning):
        assert Config.from_dict({"type": "mixed-precision", "avg_bits": 5.0}).bits == 5.0


def test_mixed_precision_layer_selection(tiny_convnet):
    cfg = MixedPrecision(bits=5.0, choices=(2, 4, 8), exclude=("conv1",), per_layer={"fc": 8})
    w = tiny_convnet.conv1.weight.detach().clone()
    rows = ns.compress_(tiny_convnet, cfg, example_inputs=torch.randn(4, 1, 28, 28)).summary
    assert [r["name"] for r in rows] == ["conv2", "fc"]
    assert rows[1]["bits"] == 8 and rows[1]["sensitivity"] is None  # fixed, not searched
    assert torch.equal(tiny_convnet.conv1.weight, w)  # excluded: untouched
    assert sum(r["bits"] * r["params"] for r in rows) <= 5.0 * sum(r["params"] for r in rows)


def test_layer_sensitivity_equals_a_direct_loop_and_leaves_the_model(tiny_convnet):
    """Oracle: quantize each layer alone on a copy, MSE of the output against the float one."""
    import copy

    x = torch.randn(4, 1, 28, 28)
    before = {k: v.clone() for k, v in tiny_convnet.state_dict().items()}
    sens = layer_sensitivity(tiny_convnet, (2, 4), x)
    ref = tiny_convnet.eval()(x).detach()
    for name in ("conv1", "conv2", "fc"):
        for bits in (2, 4):
            trial = copy.deepcopy(tiny_convnet).eval()
            w = trial.get_submodule(name).weight
            w.data.copy_(quantize_weight(w.data, bits))
            expected = float((trial(x).detach() - ref).double().pow(2).mean())
            assert sens[name][bits] == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert all(torch.equal(v, before[k]) for k, v in tiny_convnet.state_dict().items())


def test_layer_sensitivity_with_the_users_metric(tiny_convnet):
    """A higher-is-better score: the cost is its drop from the float model's score."""
    x = torch.randn(4, 1, 28, 28)
    ref = tiny_convnet.eval()(x).detach()

    def agreement(model):  # 1.0 = same outputs
        return 1.0 - float((model(x).detach() - ref).abs().mean())

    sens = layer_sensitivity(tiny_convnet, (2, 8), score=agreement, higher_is_better=True)
    for per_bits in sens.values():
        assert per_bits[2] > per_bits[8] >= -1e-12
