import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.quantization.binary import (
    BinaryConv2d,
    BinaryLinear,
    BinaryWeights,
    LatentClip,
    Ternary,
    TernaryConv2d,
    TernaryLinear,
    clip_latent_,
    pack_low_bit,
    recalibrate_batchnorm_,
    strip_low_bit,
    ternarize_twn,
    twn_threshold,
)
from nnshrink.quantization.packbits import packed_nbytes, unpack_binary, unpack_ternary


def _copy_weights(dst, src):
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    return dst


def test_deterministic_forward_is_sign_and_ste_gradient():
    layer = BinaryLinear(6, 3)
    with torch.no_grad():
        layer.weight[0, 0] = 0.0  # sign(0) must be +1, not 0
    x = torch.randn(5, 6)
    signs = torch.where(layer.weight >= 0, 1.0, -1.0).detach()
    assert signs[0, 0] == 1.0
    torch.testing.assert_close(layer(x), x @ signs.T + layer.bias)
    # STE: gradient of the latent weight equals gradient of the binary weight
    wb = signs.clone().requires_grad_(True)
    F.linear(x, wb, layer.bias).pow(2).sum().backward()
    layer(x).pow(2).sum().backward()
    torch.testing.assert_close(layer.weight.grad, wb.grad)


def test_xnor_forward_uses_per_channel_mean_abs():
    conv = BinaryConv2d(2, 3, 3, padding=1, mode="xnor")
    w = conv.weight.detach()
    alpha = torch.stack([w[c].abs().mean() for c in range(3)])
    expected_w = alpha[:, None, None, None] * torch.where(w >= 0, 1.0, -1.0)
    x = torch.randn(1, 2, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, expected_w, conv.bias, padding=1))


def test_stochastic_probability_and_eval_mode():
    layer = BinaryLinear(1000, 4, mode="stochastic")
    with torch.no_grad():
        layer.weight.fill_(0.5)  # P(+1) = (0.5 + 1) / 2 = 0.75
    wb = layer.quantized_weight().detach()
    assert set(wb.unique().tolist()) == {-1.0, 1.0}
    assert abs((wb == 1).float().mean().item() - 0.75) < 0.03
    layer.eval()
    assert torch.all(layer.quantized_weight() == 1)


def test_clip_latent_and_callback():
    model = nn.Sequential(BinaryLinear(3, 3), BinaryLinear(3, 3, mode="xnor"))
    with torch.no_grad():
        model[0].weight.fill_(3.0)
        model[1].weight.fill_(3.0)
    clip_latent_(model)
    assert torch.all(model[0].weight == 1.0) and torch.all(model[1].weight == 3.0)
    with torch.no_grad():
        model[0].weight.fill_(-5.0)
    LatentClip(0.5).on_step_end(model, 1)
    assert torch.all(model[0].weight == -0.5)


def test_twn_threshold_and_scale():
    w = torch.tensor([0.9, -0.6, 0.2, -0.1, 0.05, 0.0])
    delta = twn_threshold(w)
    assert delta.item() == pytest.approx(0.7 * (0.9 + 0.6 + 0.2 + 0.1 + 0.05) / 6)
    # |w| > 0.2158...: 0.9 and -0.6 kept; alpha = 0.75
    torch.testing.assert_close(ternarize_twn(w), torch.tensor([0.75, -0.75, 0, 0, 0, 0.0]))


def test_twn_layer_forward_and_ste():
    layer = TernaryConv2d(2, 4, 3, mode="twn")
    w = layer.weight.detach()
    delta = 0.7 * w.abs().mean()
    keep = w.abs() > delta
    alpha = w.abs()[keep].mean()
    wt = torch.where(keep, alpha * torch.sign(w), torch.zeros(()))
    x = torch.randn(2, 2, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, wt, layer.bias))
    ref = wt.clone().requires_grad_(True)
    F.conv2d(x, ref, layer.bias).sum().backward()
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, ref.grad)


def test_ttq_forward_and_gradients():
    layer = TernaryLinear(8, 5, mode="ttq", threshold=0.3)
    with torch.no_grad():
        layer.wp.fill_(0.7)
        layer.wn.fill_(0.4)
    w = layer.weight.detach()
    delta = 0.3 * w.abs().max()
    pos, neg = w > delta, w < -delta
    wt = torch.where(pos, 0.7, torch.where(neg, -0.4, 0.0))
    x = torch.randn(3, 8)
    torch.testing.assert_close(layer(x), x @ wt.T + layer.bias)
    ref = wt.clone().requires_grad_(True)
    (F.linear(x, ref, layer.bias) ** 2).sum().backward()
    (layer(x) ** 2).sum().backward()
    g = ref.grad
    torch.testing.assert_close(layer.wp.grad, g[pos].sum())
    torch.testing.assert_close(layer.wn.grad, -g[neg].sum())
    scale = torch.where(pos, 0.7, torch.where(neg, 0.4, 1.0))
    torch.testing.assert_close(layer.weight.grad, scale * g)


def test_ttq_init_scales_from_weights():
    layer = TernaryLinear(50, 20, mode="ttq")
    w = layer.weight.detach()
    delta = 0.05 * w.abs().max()
    assert layer.wp.item() == pytest.approx(w[w > delta].mean().item(), rel=1e-5)
    assert layer.wn.item() == pytest.approx(-w[w < -delta].mean().item(), rel=1e-5)


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
    ns.compress_(model, BinaryWeights(keep_first=False, keep_last=False))
    assert all(isinstance(model[i], BinaryLinear | BinaryConv2d) for i in (0, 2, 5, 7))
    torch.testing.assert_close(model[2].weight, latent.clamp(-1, 1))
    macs = ns.metrics.count_macs(model, torch.randn(1, 1, 28, 28))
    assert macs == ns.metrics.count_macs(_net(), torch.randn(1, 1, 28, 28))


def test_ttq_state_dict_reload():
    src = nn.Sequential(TernaryLinear(4, 3, mode="ttq"))
    with torch.no_grad():
        src[0].wp.fill_(0.123)
    dst = nn.Sequential(TernaryLinear(4, 3, mode="ttq"))
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 4)
    torch.testing.assert_close(dst(x), src(x))


def test_configs_round_trip_and_validate():
    for cfg in (
        BinaryWeights(mode="stochastic", keep_first=False),
        Ternary(mode="ttq", ttq_threshold=0.1),
    ):
        assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "binary", "mode": "ternary"})
    with pytest.raises(ConfigError):
        Ternary(ttq_threshold=1.5)
    with pytest.raises(ValueError):
        BinaryLinear(2, 2, mode="xor")


def test_recalibrate_batchnorm_uses_deterministic_weights():
    model = nn.Sequential(BinaryLinear(6, 4, mode="stochastic"), nn.BatchNorm1d(4))
    batches = [torch.randn(16, 6) for _ in range(3)]
    recalibrate_batchnorm_(model, [(x, None) for x in batches])
    signs = torch.where(model[0].weight >= 0, 1.0, -1.0)
    outs = torch.cat([x @ signs.T + model[0].bias for x in batches]).detach()
    torch.testing.assert_close(model[1].running_mean, outs.mean(0))
    assert not model.training and model[1].momentum == 0.1


def test_checkpoint_rebuilds_low_bit_layers(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = ns.models.create("lenet5")
    ns.compress_(model, Ternary(mode="ttq", keep_first=False))
    path = save_checkpoint(model, tmp_path / "ttq.safetensors")
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded.features[0], TernaryConv2d) and loaded.features[0].mode == "ttq"
    assert type(loaded.classifier[3]) is nn.Linear
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
