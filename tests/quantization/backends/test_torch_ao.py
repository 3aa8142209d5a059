import copy

import torch

import nnshrink as ns
from nnshrink import models
from nnshrink.quantization.backends.fake import QuantizedLayer
from nnshrink.quantization.backends.torch_ao import quantized_module_count
from nnshrink.quantization.ptq import PTQ
from tests.quantization.test_ptq import sqnr_db


def test_torch_fx_tiny_convnet(tiny_convnet):
    model = tiny_convnet.eval()
    batches = [torch.randn(8, 1, 28, 28) for _ in range(3)]
    ref = model(batches[0])
    result = ns.compress_(model, PTQ(backend="torch-fx"), example_inputs=batches)
    fx = result.artifact
    assert quantized_module_count(fx) >= 3
    assert sqnr_db(ref, fx(batches[0])) > 20
    assert isinstance(model.conv1, QuantizedLayer)  # the caller's model: its calibrated form
    assert result.summary.runtime == "torch-fx"
    # weight codes are the in-place layer's (symmetric [-127, 127], scale max|w| / 127)
    codes = fx.conv1.weight().int_repr()
    assert torch.equal(codes, model.conv1.weight_q)


def test_torch_fx_resnet20_with_untraceable_shortcut():
    model = models.create("resnet20", in_channels=3).eval()
    batches = [torch.randn(2, 3, 16, 16)]
    ref = model(batches[0])
    result = ns.compress_(copy.deepcopy(model), PTQ(backend="torch-fx"), example_inputs=batches)
    assert quantized_module_count(result.artifact) >= 19
    assert sqnr_db(ref, result.artifact(batches[0])) > 15
