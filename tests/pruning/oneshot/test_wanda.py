"""Wanda against a direct per-row argsort implementation; N:M; sequential calibration."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.pruning import MagnitudePruning, MaskCallback, Wanda
from nnshrink.pruning.masks import is_nm
from nnshrink.pruning.oneshot import wanda_scores


class Conv1D(nn.Module):
    """Hugging Face GPT-2's Conv1D layout (weight stored (in, out)), without importing it."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) / nx**0.5)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


def _direct_wanda(weight: torch.Tensor, x: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask by the paper's recipe, row by row: sort |W_ij| * ||X_j|| and drop the lowest."""
    norms = (x.double() ** 2).sum(dim=0).sqrt()
    keep = torch.ones_like(weight, dtype=torch.bool)
    for r in range(weight.shape[0]):
        score = weight[r].abs().double() * norms
        drop = torch.argsort(score, stable=True)[: round(sparsity * weight.shape[1])]
        keep[r, drop] = False
    return keep


def _outlier_inputs(n: int, cols: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, cols, generator=g)
    x[:, :4] *= 20.0  # a few outlier features, as in LLM activations
    return x


def test_mask_equals_direct_per_row_implementation():
    layer = nn.Linear(12, 6)
    x = _outlier_inputs(40, 12)
    expected = _direct_wanda(layer.weight.detach(), x, 0.5)
    before = layer.weight.detach().clone()
    ns.compress_(nn.Sequential(layer), Wanda(exclude=()), example_inputs=x)
    assert torch.equal(layer.weight_mask, expected)
    assert torch.equal(layer.weight.detach(), before * expected)  # no weight update
    assert (layer.weight_mask.sum(dim=1) == 6).all()  # every row pruned by the same count


def test_layer_group_equals_direct_whole_matrix_ranking():
    layer = nn.Linear(12, 6)
    with torch.no_grad():
        layer.weight[:2].mul_(8.0)  # two strong outputs: a layer-wide ranking spares them
    x = _outlier_inputs(40, 12)
    norms = (x.double() ** 2).sum(dim=0).sqrt()
    score = (layer.weight.detach().abs().double() * norms).flatten()
    expected = torch.ones(72, dtype=torch.bool)
    expected[torch.argsort(score, stable=True)[:36]] = False
    ns.compress_(nn.Sequential(layer), Wanda(exclude=(), group="layer"), example_inputs=x)
    assert torch.equal(layer.weight_mask, expected.view(6, 12))
    kept = layer.weight_mask.sum(dim=1)
    assert kept.sum() == 36 and kept[:2].min() > kept[2:].max()  # rows unequally pruned
    for bad in (dict(scope="global", sequential=False), dict(pattern="2:4")):
        with pytest.raises(ConfigError, match="group='layer'"):
            Wanda(group="layer", **bad)
    with pytest.raises(ConfigError, match="'row' or 'layer'"):
        Wanda(group="output")


def test_scores_are_magnitude_times_input_norm():
    w = torch.tensor([[1.0, -2.0, 0.5]])
    x = torch.tensor([[1.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
    expected = torch.tensor([[2**0.5, 2.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(wanda_scores(w, (x.double() ** 2).sum(0).sqrt()), expected)


def test_two_four_has_exactly_two_of_each_four_inputs():
    layer = nn.Linear(16, 8)
    ns.compress_(
        nn.Sequential(layer), Wanda(pattern="2:4", exclude=()), example_inputs=torch.randn(9, 16)
    )
    groups = layer.weight_mask.reshape(8, 4, 4).sum(dim=2)
    assert bool((groups == 2).all()) and is_nm(layer.weight_mask, 2, 4)
    assert int((layer.weight != 0).sum()) == 64


def test_beats_magnitude_with_outlier_inputs():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    x = _outlier_inputs(256, 64)
    target = layer(x).detach()
    errors = {}
    for cfg in (MagnitudePruning(sparsity=0.5), Wanda(sparsity=0.5, exclude=())):
        pruned = copy.deepcopy(layer)
        ns.compress_(nn.Sequential(pruned), cfg, example_inputs=x)
        with torch.no_grad():
            errors[cfg.kind] = float((pruned(x) - target).norm())
    assert errors["wanda"] < 0.8 * errors["magnitude-pruning"], errors


def test_sequential_calibrates_on_the_pruned_model():
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)
    )
    x = torch.randn(32, 8)
    dense = copy.deepcopy(model)
    ns.compress_(model, Wanda(), example_inputs=[x[:16], x[16:]])  # two batches
    first_keep = _direct_wanda(dense[0].weight.detach(), x, 0.5)
    assert torch.equal(model[0].weight_mask, first_keep)
    with torch.no_grad():  # layer 2 sees the output of the *pruned* layer 0
        seen = torch.relu(nn.functional.linear(x, dense[0].weight * first_keep, dense[0].bias))
    assert torch.equal(model[2].weight_mask, _direct_wanda(dense[2].weight.detach(), seen, 0.5))
    assert not hasattr(model[4], "weight_mask")  # the output head stays dense by default
    one_pass = copy.deepcopy(dense)
    ns.compress_(one_pass, Wanda(sequential=False), example_inputs=x)
    with torch.no_grad():
        dense_seen = torch.relu(dense[0](x))
    assert torch.equal(
        one_pass[2].weight_mask, _direct_wanda(dense[2].weight.detach(), dense_seen, 0.5)
    )


def test_gpt2_conv1d_layout_and_conv2d():
    block = nn.Sequential(Conv1D(12, 8), nn.ReLU(), Conv1D(4, 12))
    x = torch.randn(3, 5, 8)  # (batch, tokens, features)
    expected = _direct_wanda(block[0].weight.detach().T, x.reshape(-1, 8), 0.5).T
    ns.compress_(block, Wanda(exclude=()), example_inputs=x)
    assert torch.equal(block[0].weight_mask, expected)
    assert bool((block[2].weight_mask.T.sum(dim=1) == 6).all())  # per output row of (out, in)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    img = torch.randn(2, 3, 6, 6)
    patches = nn.functional.unfold(img, 3, padding=1).transpose(1, 2).reshape(-1, 27)
    expected = _direct_wanda(conv[0].weight.detach().reshape(4, 27), patches, 0.5)
    ns.compress_(conv, Wanda(), example_inputs=img)
    assert torch.equal(conv[0].weight_mask.reshape(4, 27), expected)


def test_masks_survive_finetuning_and_finalize():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(64, 8)
    ns.compress_(model, Wanda(pattern="2:4"), example_inputs=x)
    data = [(x, torch.randint(0, 4, (64,)))]
    ns.train.fit(model, data, epochs=2, lr=0.1, callbacks=[MaskCallback()], progress=False)
    assert is_nm(model[0].weight != 0, 2, 4)
    assert ns.finalize(model) == {"masks": ["0"]}
    assert not hasattr(model[0], "weight_mask") and is_nm(model[0].weight != 0, 2, 4)


def test_global_scope_and_errors():
    model = nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)
    )
    with torch.no_grad():
        model[2].weight.mul_(10.0)
    result = ns.compress_(
        model,
        Wanda(scope="global", sequential=False, sparsity=0.5),
        example_inputs=torch.randn(32, 8),
    )
    by_name = {r.name: r.sparsity for r in result.summary.rows}
    assert by_name["2.weight"] < by_name["0.weight"]
    assert result.summary.sparsity == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="sequential=False"):
        Wanda(scope="global")
    with pytest.raises(ConfigError, match="multiple of 4"):
        ns.compress_(
            nn.Sequential(nn.Linear(6, 4)),
            Wanda(pattern="2:4", exclude=()),
            example_inputs=torch.randn(2, 6),
        )
    with pytest.raises(ValueError, match="calibration data"):
        ns.compress_(model, Wanda())
    with pytest.raises(ValueError, match="no layer to prune"):
        ns.compress_(nn.Sequential(nn.Linear(4, 4)), Wanda(), example_inputs=torch.randn(2, 4))
    assert Config.from_dict(Wanda(pattern="4:8").to_dict()) == Wanda(pattern="4:8")


class _FailsOnSecondCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("boom")
        return x


def test_failure_midway_leaves_model_bit_identical():
    # pass 1 finds the forward order, pass 2 stops at layer 0 (pruned next), pass 3 fails
    model = nn.Sequential(nn.Linear(8, 8), _FailsOnSecondCall(), nn.Linear(8, 4), nn.Linear(4, 2))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="boom"):
        ns.compress_(model, Wanda(), example_inputs=torch.randn(4, 8))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())


def test_per_layer_patterns_checked_before_any_edit():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="multiple of 16"):
        ns.compress_(
            model,
            Wanda(pattern="2:4", per_layer={"2": {"pattern": "3:16"}}),
            example_inputs=torch.randn(4, 8),
        )
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())
    cfg = Wanda(pattern="2:4", per_layer={"2": {"pattern": "3:8"}})
    ns.compress_(model, cfg, example_inputs=torch.randn(4, 8))
    assert is_nm(model[2].weight_mask, 3, 8) and is_nm(model[0].weight_mask, 2, 4)
