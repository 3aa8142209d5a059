import pytest
import torch
from torch import nn

from nnshrink.quantization.backends.fake import QuantizedLayer
from nnshrink.quantization.observers import make_observer
from nnshrink.quantization.primitives import fake_quantize, minmax_qparams


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


def test_quantized_layer_rejects_other_modules():
    with pytest.raises(TypeError, match="Conv1d/2d/3d or Linear"):
        QuantizedLayer(nn.ReLU())
    with pytest.raises(ValueError, match="observer"):
        QuantizedLayer(nn.Linear(2, 2)).freeze()
