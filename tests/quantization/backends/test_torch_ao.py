import copy

import torch

from nnshrink import models
from nnshrink.quantization.backends.torch_ao import quantized_module_count
from nnshrink.quantization.ptq import PTQ, quantize_ptq
from tests.quantization.test_ptq import sqnr_db


def test_torch_fx_tiny_convnet(tiny_convnet):
    model = tiny_convnet.eval()
    batches = [torch.randn(8, 1, 28, 28) for _ in range(3)]
    result = quantize_ptq(model, PTQ(backend="torch-fx"), batches)
    assert quantized_module_count(result.model) >= 3
    assert sqnr_db(model(batches[0]), result.model(batches[0])) > 20
    assert isinstance(model.conv1, torch.nn.Conv2d)  # the caller's model is untouched


def test_torch_fx_resnet20_with_untraceable_shortcut():
    model = models.create("resnet20", in_channels=3).eval()
    batches = [torch.randn(2, 3, 16, 16)]
    result = quantize_ptq(copy.deepcopy(model), PTQ(backend="torch-fx"), batches)
    assert quantized_module_count(result.model) >= 19
    assert sqnr_db(model(batches[0]), result.model(batches[0])) > 15
