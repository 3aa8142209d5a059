import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config
from nnshrink.quantization.backends.fake import QuantizedLayer
from nnshrink.quantization.qat import (
    QAT,
    QATConv2d,
    QATLinear,
    convert_qat,
    prepare_qat,
    strip_qat,
)


def test_config_round_trip_and_validation():
    for cfg in (QAT(), QAT(bits=4, lsq=True, per_channel=False)):
        assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ns.ConfigError):
        QAT(bits=1)
    with pytest.raises(ns.ConfigError):
        QAT(averaging_constant=0.0)


@pytest.mark.parametrize("lsq", [False, True])
def test_prepare_swaps_layers_and_gradients_flow(tiny_convnet, lsq):
    names = ns.compress_(
        tiny_convnet, QAT(bits=4, lsq=lsq), example_inputs=torch.randn(2, 1, 28, 28)
    ).summary
    assert names == ["conv1", "conv2", "fc"]
    assert isinstance(tiny_convnet.conv1, QATConv2d) and isinstance(tiny_convnet.fc, QATLinear)
    tiny_convnet.train()
    tiny_convnet(torch.randn(4, 1, 28, 28)).pow(2).mean().backward()
    for q in (tiny_convnet.conv1, tiny_convnet.conv2, tiny_convnet.fc):
        assert torch.isfinite(q.weight.grad).all() and q.weight.grad.abs().sum() > 0
        if lsq:
            assert torch.isfinite(q.weight_step.grad).all() and torch.isfinite(q.act_step.grad)
            assert q.weight_step.grad.abs().sum() > 0


def test_qat_weight_is_on_the_grid():
    q = QATLinear.from_float(nn.Linear(16, 4), bits=3)
    w = q.quantized_weight().detach()
    scale, _ = q.weight_qparams()
    codes = w / scale.reshape(-1, 1)
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max() <= 3


@pytest.mark.parametrize("lsq", [False, True])
def test_convert_matches_qat_eval_output(tiny_convnet, lsq):
    model = tiny_convnet
    prepare_qat(model, QAT(bits=5, lsq=lsq))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 1, 28, 28)).pow(2).mean().backward()
        opt.step()
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    ref = model(x).detach()
    names = convert_qat(model)
    assert names == ["conv1", "conv2", "fc"]
    assert all(isinstance(model.get_submodule(n), QuantizedLayer) for n in names)
    assert torch.allclose(model(x), ref, atol=1e-4, rtol=1e-4)


def test_qat_training_reduces_loss():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x @ torch.randn(8, 1)).squeeze(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    prepare_qat(model, QAT(bits=4, lsq=True))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = (model(x).squeeze(1) - y).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_strip_qat_gives_plain_layers_with_quantized_weights(tiny_convnet):
    prepare_qat(tiny_convnet, QAT(bits=4))
    tiny_convnet.eval()
    x = torch.randn(2, 1, 28, 28)
    w = tiny_convnet.conv1.quantized_weight().detach()
    stripped = copy.deepcopy(tiny_convnet)
    strip_qat(stripped)
    assert type(stripped.conv1) is nn.Conv2d
    assert torch.equal(stripped.conv1.weight, w)
    assert stripped(x).shape == (2, 10)


def test_qat_model_checkpoint_round_trip(tmp_path):
    from nnshrink import models
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = models.create("lenet5")
    prepare_qat(model, QAT(bits=4, lsq=True))
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    ref = model(x).detach()
    save_checkpoint(model, tmp_path / "qat.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "qat.safetensors")
    assert isinstance(loaded.features[0], QATConv2d) and loaded.features[0].lsq
    assert torch.allclose(loaded.eval()(x), ref)


def test_qat_layer_selection(tiny_convnet):
    names = prepare_qat(tiny_convnet, QAT(bits=4, exclude=("@first",), per_layer={"fc": 8}))
    assert names == ["conv2", "fc"]
    assert isinstance(tiny_convnet.conv1, nn.Conv2d) and not isinstance(
        tiny_convnet.conv1, QATConv2d
    )
    assert tiny_convnet.conv2.bits == 4 and tiny_convnet.fc.bits == 8
