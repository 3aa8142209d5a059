import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.sharing.circulant import (
    Circulant,
    CirculantLinear,
    circulant_matrix,
    sign_vector,
)


def _explicit(layer: CirculantLinear) -> torch.Tensor:
    """Dense oracle built element by element: W[i, j] = r[(i - j) mod n] * d[j]."""
    n, r, d = layer.n, layer.r.detach(), layer.signs
    w = torch.empty(layer.out_features, layer.in_features, dtype=r.dtype)
    for i in range(layer.out_features):
        for j in range(layer.in_features):
            w[i, j] = r[(i - j) % n] * d[j]
    return w


@pytest.mark.parametrize("shape", [(8, 8), (11, 5), (5, 11), (16, 3)])
def test_fft_forward_equals_explicit_circulant_float64(shape):
    inp, out = shape
    layer = CirculantLinear(inp, out, seed=3).double()
    x = torch.randn(4, inp, dtype=torch.float64)
    dense = _explicit(layer)
    torch.testing.assert_close(layer(x), x @ dense.T + layer.bias, rtol=0, atol=1e-9)
    torch.testing.assert_close(layer.dense_weight(), dense, rtol=0, atol=0)


def test_circulant_matrix_and_signs():
    c = circulant_matrix(torch.arange(4.0))
    assert c[:, 0].tolist() == [0, 1, 2, 3] and c[0].tolist() == [0, 3, 2, 1]
    s = sign_vector(1000, seed=1)
    assert set(s.unique().tolist()) == {-1.0, 1.0} and abs(s.mean().item()) < 0.1
    assert torch.equal(s, sign_vector(1000, seed=1)) and not torch.equal(s, sign_vector(1000, 2))


def test_gradient_matches_dense_oracle():
    layer = CirculantLinear(7, 5).double()
    x = torch.randn(3, 7, dtype=torch.float64)
    r = layer.r.detach().clone().requires_grad_(True)
    idx = (torch.arange(5)[:, None] - torch.arange(7)[None, :]) % 7
    dense = r[idx] * layer.signs
    (x @ dense.T + layer.bias).pow(2).sum().backward()
    layer(x).pow(2).sum().backward()
    torch.testing.assert_close(layer.r.grad, r.grad, rtol=0, atol=1e-9)


def test_from_linear_recovers_a_circulant_weight_exactly():
    src = CirculantLinear(9, 6, seed=4).double()
    lin = nn.Linear(9, 6).double()
    with torch.no_grad():
        lin.weight.copy_(src.dense_weight())
    proj = CirculantLinear.from_linear(lin, seed=4)
    torch.testing.assert_close(proj.r, src.r, rtol=0, atol=1e-12)


def test_handler_params_macs_and_reload(tiny_mlp):
    x = torch.randn(2, 16)
    rows = ns.compress_(tiny_mlp, Circulant(init="random", seed=1))
    assert [(r.dense_weights, r.stored_weights) for r in rows] == [(512, 32), (128, 32)]
    assert ns.metrics.count_params(tiny_mlp) == 32 + 32 + 32 + 4
    layer = tiny_mlp[1]
    macs = ns.metrics.count_macs(tiny_mlp, x)
    assert macs == layer.macs(None, torch.zeros(2, 32)) + tiny_mlp[3].macs(None, torch.zeros(2, 4))
    assert macs < 2 * (16 * 32 + 32 * 4) * 2
    fresh = nn.Sequential(
        nn.Flatten(), CirculantLinear(16, 32, seed=1), nn.ReLU(), CirculantLinear(32, 4, seed=2)
    )
    fresh.load_state_dict(tiny_mlp.state_dict())
    torch.testing.assert_close(fresh(x), tiny_mlp(x))


def test_config_round_trip():
    cfg = Circulant(init="random", seed=7, exclude=("@below:100",))
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "circulant", "init": "svd"})
    with pytest.raises(ConfigError, match="init"):
        Circulant(per_layer={"1": {"init": "svd"}})


def test_min_weights_is_a_deprecated_alias_of_exclude_below(tiny_mlp):
    with pytest.warns(DeprecationWarning, match="circulant.exclude"):
        old = Circulant(min_weights=200)
    assert old == Circulant(exclude=("@below:200",))
    with pytest.warns(DeprecationWarning):
        assert Config.from_dict({"type": "circulant", "min_weights": 200}) == old
    rows = ns.compress_(tiny_mlp, old)  # layer "3" has 128 weights: left dense
    assert [r.name for r in rows] == ["1"] and type(tiny_mlp[3]) is nn.Linear


def test_per_layer_overrides_seed_and_init(tiny_mlp):
    before = tiny_mlp[3].weight.detach().clone()
    ns.compress_(tiny_mlp, Circulant(per_layer={"1": {"init": "random", "seed": 40}}))
    assert tiny_mlp[1].seed == 40 and tiny_mlp[3].seed == 1
    # "3" was projected from its trained weight: the nearest circulant matrix, not a random one
    proj = CirculantLinear.from_linear(_linear_from(before), seed=1)
    torch.testing.assert_close(tiny_mlp[3].r, proj.r)


def test_to_linear_computes_the_same(tiny_mlp):
    layer = CirculantLinear(16, 32, seed=3).double()
    x = torch.randn(5, 16, dtype=torch.float64)
    torch.testing.assert_close(layer.to_linear()(x), layer(x), rtol=0, atol=1e-10)


def _linear_from(weight):
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


def test_checkpoint_rebuilds_circulant_layers(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = ns.models.create("lenet300")
    ns.compress_(model, Circulant(seed=2))
    path = save_checkpoint(model, tmp_path / "circ.safetensors")
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded[1], CirculantLinear) and loaded[3].seed == 3
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
