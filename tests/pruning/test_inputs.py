"""Input-feature pruning (nnshrink/pruning/inputs.py): oracles against the unpruned layer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from nnshrink import compress_, models
from nnshrink.core import Config, ConfigError
from nnshrink.export import export_onnx
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import ort_session
from nnshrink.pruning import (
    GroupLassoCallback,
    InputPruning,
    SelectFeatures,
    StructuredPruning,
    group_lasso_penalty,
    input_layer,
)
from nnshrink.pruning.inputs import (
    feature_contribution,
    feature_statistics,
    select_input_features,
)
from nnshrink.train import fit


def _images_with_constant_border(n: int = 64) -> torch.Tensor:
    """MNIST-like batch: the outer 4-pixel frame is constant (0.25), the centre varies."""
    x = torch.full((n, 1, 28, 28), 0.25)
    x[:, :, 4:24, 4:24] = torch.rand(n, 1, 20, 20)
    return x


BORDER = 28 * 28 - 20 * 20  # 384 constant pixels


def test_removing_constant_features_is_exact():
    model = models.create("mlp", batch_norm=True).eval()
    x = _images_with_constant_border()
    before = model(x)
    result = compress_(model, InputPruning(keep=400), example_inputs=x)
    assert result.layer == "1" and result.features_before == 784
    # exactly the varying centre is kept; the constant frame is folded into the bias
    centre = torch.arange(784).reshape(28, 28)[4:24, 4:24].flatten().sort().values
    assert result.kept == centre.tolist()
    assert result.params_before - result.params_after == BORDER * 500
    assert isinstance(model[1][0], SelectFeatures) and model[1][1].in_features == 400
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


def test_without_fold_the_constant_is_lost():
    model = models.create("mlp").eval()
    x = _images_with_constant_border()
    before = model(x)
    compress_(model, InputPruning(keep=400, fold_mean=False), example_inputs=x)
    assert (model(x) - before).abs().max() > 1e-3


def test_conv_input_channels_exact_for_constant_channel():
    conv = nn.Conv2d(3, 4, 3)  # no padding: the fold is exact
    x = torch.randn(8, 3, 10, 10)
    x[:, 1] = 0.7
    new = select_input_features(conv, torch.tensor([0, 2]), feature_statistics(x)[0])
    assert new[1].in_channels == 2
    torch.testing.assert_close(new(x), conv(x), atol=1e-5, rtol=1e-5)


def test_bias_created_when_folding_into_a_biasless_layer():
    lin = nn.Linear(3, 2, bias=False)
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0]])
    new = select_input_features(lin, torch.tensor([0, 2]), feature_statistics(x)[0])
    assert new[1].bias is not None
    torch.testing.assert_close(new(x), lin(x))


def test_contribution_ranks_by_weight_norm_times_spread():
    weight = torch.tensor([[1.0, 10.0, 1.0], [0.0, 0.0, 1.0]])
    std = torch.tensor([2.0, 0.0, 1.0])
    # feature 1 has the largest weights but never varies: it contributes a constant only
    assert feature_contribution(weight, std).tolist() == pytest.approx([2.0, 0.0, 2**0.5])


def test_statistics_match_numpy():
    x = torch.randn(50, 3, 4, 4)
    mean, std = feature_statistics(x)
    flat = x.transpose(0, 1).reshape(3, -1).numpy()
    np.testing.assert_allclose(mean.numpy(), flat.mean(1), atol=1e-6)
    np.testing.assert_allclose(std.numpy(), flat.std(1), atol=1e-6)


def test_group_lasso_is_the_gradient_of_the_column_norm_sum():
    w = torch.randn(5, 4, requires_grad=True)
    w.norm(dim=0).sum().mul(0.3).backward()
    autograd = w.grad.clone()
    w.grad = torch.zeros_like(w)
    group_lasso_penalty(w, 0.3)
    torch.testing.assert_close(w.grad, autograd)


def test_group_lasso_callback_shrinks_unused_columns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(64, 6)
    x[:, 3:] = 0  # features 3..5 carry nothing: only the penalty moves their columns
    y = (x[:, 0] > 0).long()
    loader = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    norms = model[1].weight.detach().norm(dim=0)
    fit(model, loader, epochs=5, lr=0.1, weight_decay=0.0, progress=False,
        callbacks=[GroupLassoCallback(0.05, ["1"])])  # fmt: skip
    after = model[1].weight.detach().norm(dim=0)
    assert (after[3:] < norms[3:] * 0.9).all()


def test_input_layer_found_behind_flatten_and_conv():
    assert input_layer(models.create("mlp"), torch.rand(2, 1, 28, 28)) == "1"
    assert input_layer(models.create("lenet5"), torch.rand(2, 1, 28, 28)) == "features.0"


def test_input_layer_error_names_the_fix():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    with pytest.raises(ValueError, match="layer="):
        input_layer(model, torch.randn(8, 4))


def test_structured_pruning_after_input_pruning():
    model = models.create("mlp", batch_norm=True).eval()
    x = _images_with_constant_border()
    compress_(model, InputPruning(keep=400), example_inputs=x)
    compress_(model, StructuredPruning(ratio=0.5), example_inputs=x[:1])
    assert model[1][1].in_features == 400 and model[1][1].out_features == 250
    assert model(x).shape == (64, 10)


def test_checkpoint_and_onnx_round_trip(tmp_path):
    model = models.create("mlp", batch_norm=True).eval()
    x = _images_with_constant_border()
    compress_(model, InputPruning(ratio=0.5, criterion="l2", fold_mean=False), example_inputs=x)
    save_checkpoint(model, tmp_path / "m.nns")
    loaded, _ = load_checkpoint(tmp_path / "m.nns")
    loaded.eval()
    torch.testing.assert_close(loaded(x), model(x))
    session = ort_session(export_onnx(model, x[:1]), threads=1)
    (out,) = session.run(None, {"input0": x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_random_criterion_is_seeded():
    x = torch.rand(8, 1, 28, 28)
    kept = []
    for _ in range(2):
        model = models.create("mlp")
        kept.append(compress_(model, InputPruning(ratio=0.75, criterion="random"),
                              example_inputs=x).kept)  # fmt: skip
    assert kept[0] == kept[1] and len(kept[0]) == 196


def test_user_model_untouched_on_error():
    model = models.create("mlp")
    snapshot = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="only 784"):
        compress_(model, InputPruning(keep=1000), example_inputs=torch.rand(4, 1, 28, 28))
    with pytest.raises(ValueError, match="one sample"):
        compress_(model, InputPruning(keep=10), example_inputs=torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="only nn.Linear"):
        compress_(model, InputPruning(keep=10, layer="0"), example_inputs=torch.rand(4, 1, 28, 28))
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshot[key])


def test_config_validation_and_round_trip():
    with pytest.raises(ConfigError, match="sparsity"):
        InputPruning(ratio=1.0)
    with pytest.raises(ConfigError, match="keep"):
        InputPruning(keep=0)
    with pytest.raises(ConfigError, match="criterion"):
        InputPruning(criterion="l1")
    cfg = InputPruning(keep=300, layer="1", criterion="l2")
    assert Config.from_dict(cfg.to_dict()) == cfg
