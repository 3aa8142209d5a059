import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnshrink as ns
from nnshrink.binary.config import Ternary
from nnshrink.binary.layers import (
    BinaryConv2d,
    BinaryLinear,
    LatentClip,
    TernaryConv2d,
    TernaryLinear,
    clip_latent_,
    recalibrate_batchnorm_,
)


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


def test_ttq_state_dict_reload():
    src = nn.Sequential(TernaryLinear(4, 3, mode="ttq"))
    with torch.no_grad():
        src[0].wp.fill_(0.123)
    dst = nn.Sequential(TernaryLinear(4, 3, mode="ttq"))
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 4)
    torch.testing.assert_close(dst(x), src(x))


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
    ns.compress_(model, Ternary(mode="ttq", exclude=("@last",)))
    path = save_checkpoint(model, tmp_path / "ttq.safetensors")
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded.features[0], TernaryConv2d) and loaded.features[0].mode == "ttq"
    assert type(loaded.classifier[3]) is nn.Linear
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
