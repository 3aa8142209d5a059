import pytest
import torch
from torch import nn

from nnshrink.quantization.backends.fake import QuantizedLayer, as_linear
from nnshrink.quantization.observers import make_observer
from nnshrink.quantization.primitives import fake_quantize, minmax_qparams, qparams_from_range


def test_quantized_layer_matches_manual_fake_quant():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1)
    x = torch.randn(3, 2, 6, 6)
    w_scale, w_zp = minmax_qparams(conv.weight.detach(), 8, True, axis=0)
    w_ref = fake_quantize(conv.weight.detach(), w_scale, w_zp, 8, True, axis=0)
    obs = make_observer("minmax")
    obs.update(x)
    a_scale, a_zp = obs.qparams()
    ref = nn.functional.conv2d(
        fake_quantize(x, a_scale, a_zp, 8, False), w_ref, conv.bias, padding=1
    )
    q = QuantizedLayer(conv, 8, make_observer("minmax"))
    q(x)
    q.freeze()
    assert torch.allclose(q(x), ref, atol=1e-5)
    assert torch.equal(q.weight, q.dequantized_weight())  # read as .weight by fused paths


def test_quantized_layer_dynamic_and_weight_only_modes():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    x = torch.randn(5, 8) * 3
    w_scale, w_zp = minmax_qparams(lin.weight.detach(), 8, True, axis=0)
    w_ref = fake_quantize(lin.weight.detach(), w_scale, w_zp, 8, True, axis=0)
    dyn = QuantizedLayer(nn.Linear(8, 4), act_mode="dynamic")
    dyn.layer.load_state_dict(lin.state_dict())
    dyn.freeze()  # no calibration: the range comes from each batch
    s, z = qparams_from_range(x.min(), x.max(), 8, False)
    expected = nn.functional.linear(fake_quantize(x, s, z, 8, False), w_ref, lin.bias)
    assert torch.allclose(dyn(x), expected, atol=1e-5)
    wo = QuantizedLayer(nn.Linear(8, 4), bits=4, act_mode="none", group_size=4)
    wo.layer.load_state_dict(lin.state_dict())
    wo.freeze()
    assert wo.weight_scale.shape == (4, 2)  # one scale per group of 4 inputs
    expected = nn.functional.linear(x, wo.dequantized_weight(), lin.bias)
    assert torch.allclose(wo(x), expected, atol=1e-6)
    assert int(wo.weight_q.abs().max()) <= 7


def test_conv1d_becomes_linear():
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv1d = Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs, weight (4, 6)
    x = torch.randn(2, 3, 4)
    assert torch.allclose(as_linear(conv1d)(x), conv1d(x), atol=1e-6)
    q = QuantizedLayer(conv1d, act_mode="none")
    q.freeze()
    assert torch.allclose(q(x), conv1d(x), atol=0.02)


def test_quantized_layer_rejects_other_modules():
    with pytest.raises(TypeError, match="Conv1d/2d/3d, Linear"):
        QuantizedLayer(nn.ReLU())
    with pytest.raises(ValueError, match="observer"):
        QuantizedLayer(nn.Linear(2, 2)).freeze()
    with pytest.raises(ValueError, match="act_mode"):
        QuantizedLayer(nn.Linear(2, 2), act_mode="later")
