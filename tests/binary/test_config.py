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
from nnshrink.binary.xnor_layers import XNORConv2d
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


def test_xnor_activations_config_installs_xnor_layers():
    model = _net()
    rows = ns.compress_(model, BinaryWeights(mode="xnor", activations=True)).summary
    assert [(r.name, r.replaced_by) for r in rows] == [("2", "XNORConv2d"), ("5", "XNORLinear")]
    assert type(model[0]) is nn.Conv2d and type(model[7]) is nn.Linear
    big = rows[1]
    assert big.packed_bytes == (big.weights + 7) // 8 + 4 * 10  # 1 bit/weight + 10 scales
    with pytest.raises(ConfigError, match="mode='xnor'"):
        BinaryWeights(activations=True)
    mixed = _net()
    per_layer = {"5": {"activations": False}, "7": {"mode": "stochastic", "activations": False}}
    ns.compress_(mixed, BinaryWeights(mode="xnor", activations=True, exclude=("@first",),
                                      per_layer=per_layer))  # fmt: skip
    assert isinstance(mixed[2], XNORConv2d) and type(mixed[5]) is BinaryLinear
    assert mixed[5].mode == "xnor" and mixed[7].mode == "stochastic"
    with pytest.raises(ConfigError, match="mode='xnor'"):
        ns.compress_(_net(), BinaryWeights(per_layer={"2": {"activations": True}}))


@pytest.mark.parametrize("cls", [BinaryWeights, Ternary])
def test_keep_first_last_are_deprecated_aliases_of_exclude(cls):
    expected = {
        (True, True): ("@first", "@last"),
        (True, False): ("@first",),
        (False, True): ("@last",),
        (False, False): (),
    }
    for (first, last), exclude in expected.items():
        with pytest.warns(DeprecationWarning, match="exclude"):
            old = cls(keep_first=first, keep_last=last)
        assert old == cls(exclude=exclude)
        with pytest.warns(DeprecationWarning):
            assert Config.from_dict({"type": cls.kind, "keep_first": first}) == cls(
                exclude=expected[(first, True)]
            )
        # the same layers as before the rename
        with pytest.warns(DeprecationWarning):
            rows = ns.compress_(_net(), cls(keep_first=first, keep_last=last)).summary
        names = ["0", "2", "5", "7"][(0 if not first else 1) : (4 if not last else 3)]
        assert [r.name for r in rows] == names
    assert cls().to_dict()["exclude"] == ["@first", "@last"]
    with pytest.raises(ConfigError, match="not both"):
        cls(exclude=(), keep_first=False)
