import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.sharing.hashing import HashedLinear, Hashing, hash_positions, mix32


def _fmix32_reference(h: int) -> int:
    m = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def test_mix32_matches_python_reference():
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(0, 2**32, (1000,), generator=g, dtype=torch.int64).tolist()
    xs += [0, 1, 2**32 - 1]
    assert mix32(torch.tensor(xs)).tolist() == [_fmix32_reference(x) for x in xs]


def test_hash_is_deterministic_uniform_and_seeded():
    idx, sign = hash_positions(100, 80, 50, seed=3)
    idx2, sign2 = hash_positions(100, 80, 50, seed=3)
    assert torch.equal(idx, idx2) and torch.equal(sign, sign2)
    counts = torch.bincount(idx.reshape(-1), minlength=50).float()
    assert counts.min() > 100 and counts.max() < 220  # expected 160 per bucket
    assert abs(sign.mean().item()) < 0.05
    other, _ = hash_positions(100, 80, 50, seed=4)
    assert (other != idx).float().mean() > 0.9


def test_forward_equals_dense_matmul_with_virtual_matrix():
    layer = HashedLinear(12, 7, buckets=10, seed=1).double()
    idx, sign = hash_positions(7, 12, 10, seed=1)
    virtual = layer.weight_vec.detach()[idx] * sign.double()
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ virtual.T + layer.bias, rtol=0, atol=1e-12)
    assert layer.compression == pytest.approx(10 / 84)


def test_bucket_gradient_is_signed_sum_and_params_small():
    layer = HashedLinear(9, 5, buckets=6, seed=2)
    assert sum(p.numel() for p in layer.parameters()) == 6 + 5
    assert "hash_index" not in layer.state_dict()
    x = torch.randn(3, 9)
    dense = layer.virtual_weight().detach().requires_grad_(True)
    nn.functional.linear(x, dense, layer.bias).pow(2).sum().backward()
    layer(x).pow(2).sum().backward()
    expected = torch.zeros(6).index_add_(
        0, layer.hash_index.reshape(-1), (dense.grad * layer.hash_sign).reshape(-1)
    )
    torch.testing.assert_close(layer.weight_vec.grad, expected)


def test_from_linear_is_least_squares_projection():
    lin = nn.Linear(10, 6)
    hashed = HashedLinear.from_linear(lin, buckets=60)
    # with as many buckets as weights most positions are alone: the fit error is far below ||W||
    err = (hashed.virtual_weight() - lin.weight).norm() / lin.weight.norm()
    assert err < 0.8

    # optimality: the projection beats any perturbation of the bucket values
    def loss(vec):
        return ((vec[hashed.hash_index] * hashed.hash_sign - lin.weight) ** 2).sum()

    best = loss(hashed.weight_vec.detach())
    assert best <= loss(hashed.weight_vec.detach() + 1e-3 * torch.randn(60))


def test_handler_replaces_linear_and_reports(tiny_mlp):
    x = torch.randn(2, 16)
    rows = ns.compress_(tiny_mlp, Hashing(sparsity=0.75, seed=5))
    assert [r.name for r in rows] == ["1", "3"]
    assert isinstance(tiny_mlp[1], HashedLinear) and tiny_mlp[1].buckets == 128
    assert tiny_mlp[1].seed == 5 and tiny_mlp[3].seed == 6
    assert tiny_mlp(x).shape == (2, 4)
    assert ns.metrics.count_macs(tiny_mlp, x) == 2 * (16 * 32 + 32 * 4)
    reloaded = nn.Sequential(
        nn.Flatten(), HashedLinear(16, 32, 128, seed=5), nn.ReLU(), HashedLinear(32, 4, 32, seed=6)
    )
    reloaded.load_state_dict(tiny_mlp.state_dict())
    torch.testing.assert_close(reloaded(x), tiny_mlp(x))


def test_config_round_trip_and_validation():
    cfg = Hashing(sparsity=63 / 64, seed=2, exclude=("@below:1000",))
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="sparsity"):
        Hashing(sparsity=1.0)
    with pytest.raises(ConfigError, match=r"per_layer\['1'\]"):
        Hashing(per_layer={"1": 1.5})
    with pytest.raises(ValueError, match="no nn.Linear"):
        ns.compress_(nn.Sequential(nn.Linear(2, 2)), Hashing(exclude=("@below:10",)))


def test_deprecated_compression_and_min_weights_map_onto_sparsity_and_exclude():
    with pytest.warns(DeprecationWarning, match="hashing.sparsity"):
        old = Hashing(compression=0.125)
    assert old == Hashing(sparsity=0.875)
    with pytest.warns(DeprecationWarning, match="hashing.exclude"):
        assert Hashing(min_weights=1000) == Hashing(exclude=("@below:1000",))
    with pytest.warns(DeprecationWarning):
        recipe = Config.from_dict({"type": "hashing", "compression": 0.25, "min_weights": 0})
    assert recipe == Hashing(sparsity=0.75)
    with pytest.raises(ConfigError, match="not both"):
        Hashing(compression=0.5, sparsity=0.5)


def test_per_layer_sparsity_and_exclude_tokens(tiny_mlp):
    rows = ns.compress_(tiny_mlp, Hashing(sparsity=0.75, per_layer={"@last": 0.5}))
    assert [(r.name, r.buckets) for r in rows] == [("1", 128), ("3", 64)]
    assert rows[1].sparsity == 0.5 and rows[1].compression == 0.5
    assert tiny_mlp[3].sparsity == 0.5
    model = ns.models.create("lenet300")
    rows = ns.compress_(model, Hashing(exclude=("@below:2000",)))
    assert [r.name for r in rows] == ["1", "3"] and type(model[5]) is nn.Linear


def test_to_linear_computes_the_same():
    layer = HashedLinear(12, 5, buckets=7, seed=1)
    x = torch.randn(3, 12)
    plain = layer.to_linear()
    assert type(plain) is nn.Linear
    torch.testing.assert_close(plain(x), layer(x))


def test_checkpoint_rebuilds_hashed_layers(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = ns.models.create("lenet300")
    ns.compress_(model, Hashing(sparsity=15 / 16, seed=3))
    path = save_checkpoint(model, tmp_path / "hashed.safetensors")
    assert path.stat().st_size < 4 * 266_610 / 8  # only the bucket vectors are stored
    loaded, _ = load_checkpoint(path)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
