"""BinaryWeights / Ternary configs and handlers (nnshrink.binary.config)."""

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.binary.config import BinaryWeights, Ternary
from nnshrink.binary.layers import (
    BinaryConv2d,
    BinaryLinear,
    pack_low_bit,
    strip_low_bit,
)
from nnshrink.core import Config, ConfigError
from nnshrink.storage.packbits import packed_nbytes, unpack_binary, unpack_ternary


def _net():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), nn.Flatten(),
        nn.Linear(6 * 24 * 24, 10), nn.ReLU(), nn.Linear(10, 3),
    )  # fmt: skip


@pytest.mark.parametrize(
    "cfg", [BinaryWeights(), BinaryWeights(mode="xnor"), Ternary(), Ternary(mode="ttq")]
)
def test_handler_keeps_first_last_and_packs(cfg):
    model = _net()
    x = torch.randn(2, 1, 28, 28)
    rows = ns.compress_(model, cfg)
    assert type(model[0]) is nn.Conv2d and type(model[7]) is nn.Linear
    assert {r.name for r in rows} == {"2", "5"}
    packed = pack_low_bit(model)
    bits = 1 if cfg.kind == "binary" else 2
    for r in rows:
        assert packed[r.name].bits == bits
        assert len(packed[r.name].data) == packed_nbytes(r.weights, bits)
        assert r.packed_bytes == packed[r.name].nbytes
        assert r.packed_bytes == len(packed[r.name].data) + 4 * packed[r.name].scales.size
    big = next(r for r in rows if r.name == "5")
    assert big.float_bytes / big.packed_bytes > (31 if bits == 1 else 15.9)
    model.eval()
    out = model(x)
    unpack = unpack_binary if bits == 1 else unpack_ternary
    weights = {name: unpack(p) for name, p in packed.items()}
    strip_low_bit(model)
    assert type(model[2]) is nn.Conv2d and type(model[5]) is nn.Linear
    torch.testing.assert_close(model(x), out)
    for name, w in weights.items():
        assert torch.equal(model.get_submodule(name).weight, w)


def test_handler_all_layers_and_conversion_preserves_latent():
    model = _net()
    latent = model[2].weight.detach().clone()
    ns.compress_(model, BinaryWeights(exclude=()))
    assert all(isinstance(model[i], BinaryLinear | BinaryConv2d) for i in (0, 2, 5, 7))
    torch.testing.assert_close(model[2].weight, latent.clamp(-1, 1))
    macs = ns.metrics.count_macs(model, torch.randn(1, 1, 28, 28))
    assert macs == ns.metrics.count_macs(_net(), torch.randn(1, 1, 28, 28))


def test_configs_round_trip_and_validate():
    for cfg in (
        BinaryWeights(mode="stochastic", exclude=("@last",)),
        Ternary(mode="ttq", ttq_threshold=0.1),
    ):
        assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "binary", "mode": "ternary"})
    with pytest.raises(ConfigError):
        Ternary(ttq_threshold=1.5)
    with pytest.raises(ValueError):
        BinaryLinear(2, 2, mode="xor")
