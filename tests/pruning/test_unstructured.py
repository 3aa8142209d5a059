"""Unstructured pruning: thresholds against a numpy oracle, masks through optimizers, permanence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.pruning import (
    AGPCallback,
    MagnitudePruning,
    MaskCallback,
    apply_masks_,
    get_masks,
    prune_iteratively,
    schedules,
)
from nnshrink.train import Callback, fit


def _prune(model, config, **kwargs):
    """compress_ with the technique's summary (what the deprecated prune_ returned)."""
    return ns.compress_(model, config, **kwargs).summary


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 12), nn.ReLU(), nn.Linear(12, 4)
    )


def _batches(n: int = 6, batch: int = 8, features: int = 16, classes: int = 4):
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(batch, features, generator=g),
            torch.randint(0, classes, (batch,), generator=g),
        )
        for _ in range(n)
    ]


def _weights(model):
    return {
        n: m.weight.detach().numpy().copy()
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear | nn.Conv2d)
    }


# ---- pure functions vs numpy ---------------------------------------------------------------


# ---- layer vs global scope on a model --------------------------------------------------------


def test_layer_scope_matches_numpy_oracle():
    model = _mlp()
    before = _weights(model)
    summary = _prune(model, MagnitudePruning(sparsity=0.6, scope="layer"))
    for name, w in before.items():
        k = round(0.6 * w.size)
        thr = np.sort(np.abs(w).ravel())[k - 1]
        expected = np.where(np.abs(w) > thr, w, 0.0)
        np.testing.assert_array_equal(model.get_submodule(name).weight.detach().numpy(), expected)
    assert [r.name for r in summary.rows] == ["1.weight", "3.weight", "5.weight"]
    assert all(abs(r.sparsity - 0.6) < 0.01 for r in summary.rows)


def test_global_scope_matches_numpy_oracle():
    model = _mlp()
    with torch.no_grad():
        model[5].weight.mul_(10)  # a layer with large weights should keep more of them
    before = _weights(model)
    summary = _prune(model, MagnitudePruning(sparsity=0.7, scope="global", criterion="magnitude"))
    allw = np.concatenate([np.abs(w).ravel() for w in before.values()])
    k = round(0.7 * allw.size)
    thr = np.sort(allw)[k - 1]
    for name, w in before.items():
        expected = np.where(np.abs(w) > thr, w, 0.0)
        np.testing.assert_array_equal(model.get_submodule(name).weight.detach().numpy(), expected)
    assert summary.numel - summary.nonzero == k
    by_name = {r.name: r.sparsity for r in summary.rows}
    assert by_name["5.weight"] < by_name["1.weight"]


def _lamp_oracle(w: np.ndarray) -> np.ndarray:
    """Lee et al. 2021, eq. 2, written directly: w_u^2 over the sum of w_v^2 for |w_v| >= |w_u|."""
    flat = (w.astype(np.float64) ** 2).ravel()
    out = np.array([x / flat[flat >= x].sum() if x > 0 else 0.0 for x in flat])
    return out.reshape(w.shape)


def test_lamp_scores_match_the_paper_formula():
    w = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(
        ns.pruning.lamp_scores(w).numpy(), _lamp_oracle(w.numpy()), rtol=1e-6
    )
    assert float(ns.pruning.lamp_scores(w).max()) == 1.0  # the largest weight of a layer


def test_default_is_one_lamp_threshold_over_all_layers():
    model = _mlp()
    before = _weights(model)
    summary = _prune(model, MagnitudePruning(sparsity=0.7))  # defaults: global, lamp
    scores = np.concatenate([_lamp_oracle(w).ravel() for w in before.values()])
    k = round(0.7 * scores.size)
    thr = np.sort(scores)[k - 1]
    for name, w in before.items():
        kept = _lamp_oracle(w) > thr
        np.testing.assert_array_equal(model.get_submodule(name).weight.detach().numpy() != 0, kept)
    assert summary.numel - summary.nonzero == k


def test_lamp_ignores_each_layers_scale_and_never_empties_a_layer():
    a, b, c = _mlp(), _mlp(), _mlp()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # as a BatchNorm after a layer allows: the scale carries no meaning
        b[1].weight.mul_(0.01)
        b[5].weight.mul_(100.0)
    c.load_state_dict(b.state_dict())
    _prune(a, MagnitudePruning(sparsity=0.95))
    _prune(b, MagnitudePruning(sparsity=0.95))
    for k, m in get_masks(a).items():
        assert torch.equal(m, get_masks(b)[k])
        assert int(m.sum()) >= 1
    # |w| with one global threshold empties the rescaled layer
    _prune(c, MagnitudePruning(sparsity=0.95, criterion="magnitude"))
    assert int(get_masks(c)["1.weight"].sum()) == 0


def test_per_layer_regex_ignore_bias_and_filter():
    model = _mlp()
    cfg = MagnitudePruning(
        sparsity=0.5, per_layer={"[35]": 0.25}, exclude=("5",), include_bias=True, scope="layer"
    )
    summary = _prune(model, cfg)
    rows = {r.name: r for r in summary.rows}
    assert set(rows) == {"1.weight", "1.bias", "3.weight", "3.bias"}
    assert rows["3.weight"].nonzero == 12 * 32 - 96 and rows["3.weight"].target == 0.25
    assert rows["1.bias"].nonzero == 16
    assert int((model[5].weight == 0).sum()) == 0
    only_first = _prune(_mlp(), MagnitudePruning(), filter_fn=lambda m, n: n == "1")
    assert [r.name for r in only_first.rows] == ["1.weight"]


def test_conv_layers_and_layer_types(tiny_convnet):
    summary = _prune(tiny_convnet, MagnitudePruning(sparsity=0.5, layer_types=("conv",)))
    assert [r.name for r in summary.rows] == ["conv1.weight", "conv2.weight"]
    assert int((tiny_convnet.fc.weight == 0).sum()) == 0
    with pytest.raises(ValueError, match="no layer to prune"):
        _prune(nn.Sequential(nn.ReLU()), MagnitudePruning())


def test_random_criterion_exact_count_and_seeded():
    a, b, c = _mlp(), _mlp(), _mlp()
    for m in (b, c):
        m.load_state_dict(a.state_dict())
    _prune(a, MagnitudePruning(sparsity=0.5, criterion="random", seed=3, scope="layer"))
    _prune(b, MagnitudePruning(sparsity=0.5, criterion="random", seed=3, scope="layer"))
    _prune(c, MagnitudePruning(sparsity=0.5))
    masks_a, masks_b, masks_c = get_masks(a), get_masks(b), get_masks(c)
    for k in masks_a:
        assert torch.equal(masks_a[k], masks_b[k])
        assert int((~masks_a[k]).sum()) == round(0.5 * masks_a[k].numel())
    assert not torch.equal(masks_a["1.weight"], masks_c["1.weight"])


def test_repruning_only_adds_zeros():
    model = _mlp()
    _prune(model, MagnitudePruning(sparsity=0.5, criterion="random", scope="layer"))
    first = {k: v.clone() for k, v in get_masks(model).items()}
    with torch.no_grad():  # make the pruned positions' (zero) weights "large" candidates again
        for p in model.parameters():
            p.add_(0.0)
    _prune(model, MagnitudePruning(sparsity=0.8, criterion="random", seed=7, scope="layer"))
    for k, m in get_masks(model).items():
        assert not bool((m & ~first[k]).any())  # nothing revived
        assert int((~m).sum()) == round(0.8 * m.numel())
    # asking for less sparsity never unprunes
    summary = _prune(model, MagnitudePruning(sparsity=0.2))
    assert summary.sparsity == pytest.approx(0.8, abs=0.01)


# ---- masks keep pruned weights at zero during training ---------------------------------------


class _SparsityLog(Callback):
    def __init__(self):
        self.values = []

    def on_step_end(self, model, step):
        self.values.append(float((model[1].weight == 0).float().mean()))


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=1e-2),
    ],
)
def test_masks_survive_optimizer_steps_with_momentum_state(optimizer):
    model = _mlp()
    opt = optimizer(model.parameters())
    data = _batches()
    fit(
        model, data, epochs=1, optimizer=opt, schedule="constant", progress=False
    )  # dense: momentum
    _prune(model, MagnitudePruning(sparsity=0.7))
    masks = {k: v.clone() for k, v in get_masks(model).items()}
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    fit(
        model,
        data,
        epochs=2,
        optimizer=opt,
        schedule="constant",
        callbacks=[MaskCallback()],
        progress=False,
    )
    for key, mask in masks.items():
        w = dict(model.named_parameters())[key]
        assert bool((w[~mask] == 0).all())
        assert not torch.equal(w[mask], before[key][mask])  # the survivors did train
    # and the moments of pruned weights stop growing: their grads are zero after masking
    loss = nn.functional.cross_entropy(model(data[0][0]), data[0][1])
    opt.zero_grad()
    loss.backward()
    MaskCallback().on_after_backward(model)
    assert bool((model[1].weight.grad[~masks["1.weight"]] == 0).all())


def test_without_mask_callback_momentum_revives_weights():
    """The control: the callback is what keeps zeros at zero (so the test above means something)."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    data = _batches()
    fit(model, data, epochs=1, optimizer=opt, schedule="constant", progress=False)
    _prune(model, MagnitudePruning(sparsity=0.7))
    fit(model, data, epochs=1, optimizer=opt, schedule="constant", progress=False)
    assert apply_masks_(model) > 0


# ---- permanence, save/load --------------------------------------------------------------------


# ---- config, registry, schedules in use ---------------------------------------------------------


def test_config_round_trip_and_validation():
    cfg = MagnitudePruning(
        sparsity=0.8,
        scope="global",
        per_layer={"fc.*": 0.5},
        exclude=("0",),
        include_bias=True,
        layer_types=("linear",),
        criterion="random",
        seed=4,
    )
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "magnitude-pruning", "sparsity": 0.5}) == MagnitudePruning()
    for bad in (
        dict(sparsity=1.0),
        dict(scope="net"),
        dict(criterion="l1"),
        dict(layer_types=("rnn",)),
        dict(per_layer={"(": 0.5}),
        dict(per_layer={"a": -1}),
    ):
        with pytest.raises(ConfigError):
            MagnitudePruning(**bad)


def test_compress_dispatches_to_handler():
    model = ns.models.create("lenet300")
    summary = ns.compress_(model, MagnitudePruning(sparsity=0.9))
    assert summary.sparsity == pytest.approx(0.9, abs=1e-3)
    assert ns.metrics.count_nonzero_params(model) == summary.nonzero + 410  # biases untouched


def test_prune_iteratively_follows_schedule():
    model = _mlp()
    calls = []
    seen_masks = []

    def train_fn(m, k):
        calls.append(k)
        seen_masks.append({n: v.clone() for n, v in get_masks(m).items()})
        fit(m, _batches(2), epochs=1, lr=0.05, callbacks=[MaskCallback()], progress=False)
        return {"round": k}

    log = prune_iteratively(model, train_fn, 3, MagnitudePruning(sparsity=0.875))
    assert calls == [0, 1, 2]
    assert [r["sparsity"] for r in log] == pytest.approx([0.5, 0.75, 0.875], abs=0.01)
    assert [r["metrics"] for r in log] == [{"round": 0}, {"round": 1}, {"round": 2}]
    for prev, nxt in zip(seen_masks, seen_masks[1:]):
        for k in prev:
            assert not bool((nxt[k] & ~prev[k]).any())


def test_prune_iteratively_warns_when_train_fn_revives_weights():
    model = _mlp()

    def careless(m, k):
        fit(m, _batches(2), epochs=1, lr=0.05, progress=False)

    with pytest.warns(UserWarning, match="MaskCallback"):
        prune_iteratively(model, careless, 1, MagnitudePruning(sparsity=0.5))
    assert apply_masks_(model) == 0


def test_agp_callback_reaches_targets_on_schedule():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 25))  # 400 weights: exact percentages
    model.append(nn.Linear(25, 4))
    cfg = MagnitudePruning(sparsity=0.9, exclude=("2",))
    agp_cb = AGPCallback(cfg, start_step=2, n_steps=4, frequency=3)
    log = _SparsityLog()
    fit(model, _batches(16), epochs=1, lr=0.05, callbacks=[agp_cb, log], progress=False)
    for t, value in enumerate(log.values, start=1):  # value after optimizer step number t
        expected = schedules.agp(t, final=0.9, start_step=2, n_steps=4, frequency=3)
        assert value == pytest.approx(round(expected * 400) / 400), t
    assert log.values[-1] == pytest.approx(0.9)
    assert [s for s, _ in agp_cb.history] == [2, 5, 8, 11, 14]
    assert int((model[2].weight == 0).sum()) == 0


def test_masked_model_exports_to_onnx_unchanged(tmp_path):
    import onnxruntime as ort

    from nnshrink.export.onnx import export_onnx

    model = _mlp().eval()
    _prune(model, MagnitudePruning(sparsity=0.8))  # masks still attached: export must not care
    x = torch.randn(3, 16)
    session = ort.InferenceSession(export_onnx(model, x, tmp_path / "m.onnx"))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


# ---- N:M patterns, layer selection, deprecated spellings ---------------------------------------


def test_pattern_two_four_keeps_the_two_largest_of_each_group(tiny_convnet):
    model = _mlp()
    before = _weights(model)
    summary = _prune(model, MagnitudePruning(pattern="2:4"))
    for name, w in before.items():
        groups = np.abs(w).reshape(w.shape[0], -1, 4)
        kept = model.get_submodule(name).weight.detach().numpy().reshape(groups.shape) != 0
        top2 = np.argsort(-groups, axis=2, kind="stable")[..., :2]
        expected = np.zeros_like(kept)
        np.put_along_axis(expected, top2, True, axis=2)
        np.testing.assert_array_equal(kept, expected)
    assert summary.sparsity == 0.5 and {r.target for r in summary.rows} == {0.5}
    # conv weights are grouped along the flattened (in, kh, kw): conv2 has 8 * 9 = 72 inputs
    cfg = MagnitudePruning(pattern="1:4", sparsity=0.75, include=("conv2",))
    assert _prune(tiny_convnet, cfg).sparsity == 0.75


def test_pattern_per_layer_and_errors():
    model = _mlp()
    cfg = MagnitudePruning(sparsity=0.6, per_layer={"1": {"pattern": "2:4"}, "5": None})
    summary = _prune(model, cfg)
    rows = {r.name: r for r in summary.rows}
    assert set(rows) == {"1.weight", "3.weight"}
    assert rows["1.weight"].sparsity == 0.5 and rows["3.weight"].sparsity == pytest.approx(
        0.6, abs=0.01
    )
    for bad, match in (
        (dict(pattern="2:4", sparsity=0.6), "set sparsity=0.5"),
        (dict(pattern="2:4", per_layer={"1": 0.9}), "pattern=None"),
        (dict(pattern="2:4", include_bias=True), "include_bias"),
        (dict(pattern="two:four"), "N:M"),
    ):
        with pytest.raises(ConfigError, match=match):
            MagnitudePruning(**bad)
    # a pattern ranks within each group of M, so the (global) scope does not apply to it
    two_four = _prune(_mlp(), MagnitudePruning(pattern="2:4", scope="global"))
    assert all(r.sparsity == 0.5 for r in two_four.rows)
    with pytest.raises(ConfigError, match="multiple of 4"):
        _prune(nn.Sequential(nn.Linear(6, 4)), MagnitudePruning(pattern="2:4"))
    with pytest.raises(ConfigError, match="schedule"):
        prune_iteratively(_mlp(), lambda m, k: None, 2, MagnitudePruning(pattern="2:4"))


def test_layer_selection_tokens():
    summary = _prune(_mlp(), MagnitudePruning(exclude=("@last",), per_layer={"@first": 0.25}))
    assert {r.name: r.target for r in summary.rows} == {"1.weight": 0.25, "3.weight": 0.5}
    assert [r.name for r in _prune(_mlp(), MagnitudePruning(include=("3",))).rows] == ["3.weight"]


def test_deprecated_prune_and_ignore_still_work():
    model = _mlp()
    with pytest.warns(DeprecationWarning, match="compress_"):
        from nnshrink.pruning import prune_
    with pytest.warns(DeprecationWarning, match="exclude"):
        cfg = MagnitudePruning(sparsity=0.5, ignore=("5",))
    assert cfg == MagnitudePruning(sparsity=0.5, exclude=("5",))
    result = prune_(model, cfg)
    assert [r.name for r in result.rows] == ["1.weight", "3.weight"]
    with pytest.warns(DeprecationWarning):
        assert Config.from_dict({"type": "magnitude-pruning", "ignore": ["5"]}) == cfg
