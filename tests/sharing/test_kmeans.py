import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.sharing.kmeans import WeightSharing
from nnshrink.sharing.layers import SharedWeightConv2d, SharedWeightLinear


def _pruned_linear():
    lin = nn.Linear(20, 6)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.08] = 0
    return lin


def test_pruned_zeros_survive_optimizer_steps_and_indices_fixed():
    model = nn.Sequential(_pruned_linear(), nn.ReLU(), nn.Linear(6, 3))
    zeros = model[0].weight == 0
    ns.compress_(model, WeightSharing(bits=4))
    indices = model[0].indices.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 20)).logsumexp(1).sum().backward()
        opt.step()
    assert torch.all(model[0].weight[zeros] == 0)
    assert torch.equal(model[0].indices, indices)
    assert model[0].weight[~zeros].unique().numel() <= 16


def test_compress_bits_per_layer_and_summary(tiny_convnet, mnist_batch):
    cfg = WeightSharing(bits=4, per_layer={"conv2": 2, "@conv": 6, "@linear": 3})
    rows = ns.compress_(tiny_convnet, cfg)
    by_name = {r.name: r for r in rows}
    assert by_name["conv1"].bits == 6 and by_name["conv2"].bits == 2 and by_name["fc"].bits == 3
    assert tiny_convnet.conv2.codebook.numel() == 4
    assert all(r.clusters_used <= 2**r.bits for r in rows)
    assert tiny_convnet(mnist_batch).shape == (4, 10)
    macs = ns.metrics.count_macs(tiny_convnet, mnist_batch)
    assert macs == 4 * (28 * 28 * 8 * 9 + 28 * 28 * 16 * 8 * 9 + 64 * 10)


def test_compress_respects_filter_and_bad_layers_leave_model_untouched():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), nn.Linear(2, 2))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="padding_mode"):
        ns.compress_(model, WeightSharing())
    assert type(model[1]) is nn.Linear and model.state_dict().keys() == before.keys()
    ns.compress_(model, WeightSharing(bits=2), filter_fn=lambda m, n: n == "1")
    assert type(model[0]) is nn.Conv2d and isinstance(model[1], SharedWeightLinear)
    other = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), nn.Linear(2, 2))
    ns.compress_(other, WeightSharing(bits=2, exclude=("@conv",)))
    assert type(other[0]) is nn.Conv2d and isinstance(other[1], SharedWeightLinear)


def test_config_round_trip_and_validation():
    cfg = WeightSharing(bits=6, per_layer={"fc.*": 4, "@conv": 8, "@linear": 5}, init="density")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "weight-sharing", "bits": 3}) == WeightSharing(bits=3)
    with pytest.raises(ConfigError):
        WeightSharing(bits=9)
    with pytest.raises(ConfigError, match="bits must be in 1..8"):
        WeightSharing(per_layer={"@conv": 12})
    with pytest.raises(ConfigError, match="bits must be in 1..8"):
        WeightSharing(per_layer={"@conv": {"bits": 0}})
    with pytest.raises(ConfigError):
        WeightSharing(per_layer={"(": 3})
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "weight-sharing", "init": "kmeans++"})


def test_conv_bits_and_fc_bits_are_deprecated_aliases_of_per_layer(tiny_convnet):
    with pytest.warns(DeprecationWarning, match="weight-sharing.per_layer"):
        old = WeightSharing(conv_bits=6, fc_bits=3, per_layer={"conv2": 2})
    # the old precedence: per_layer patterns, then conv_bits/fc_bits, then bits
    assert old == WeightSharing(per_layer={"conv2": 2, "@conv": 6, "@linear": 3})
    assert old.bits_for("conv1", tiny_convnet.conv1) == 6
    assert old.bits_for("conv2", tiny_convnet.conv2) == 2
    assert old.bits_for("fc", tiny_convnet.fc) == 3
    with pytest.warns(DeprecationWarning):
        recipe = Config.from_dict({"type": "weight-sharing", "conv_bits": 8, "fc_bits": None})
    assert recipe == WeightSharing(per_layer={"@conv": 8})
    rows = ns.compress_(tiny_convnet, old)
    assert {r.name: r.bits for r in rows} == {"conv1": 6, "conv2": 2, "fc": 3}


def test_checkpoint_rebuilds_shared_layers(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = ns.models.create("lenet5")
    ns.compress_(model, WeightSharing(per_layer={"@conv": 8, "@linear": 5}))
    path = save_checkpoint(model, tmp_path / "shared.safetensors")
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded.features[0], SharedWeightConv2d) and loaded.features[0].bits == 8
    assert isinstance(loaded.classifier[1], SharedWeightLinear)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
