import copy
import pickle

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.quantization import PTQ, convert
from nnshrink.quantization.backends.auto import AutoInt8Module
from nnshrink.quantization.backends.ort_module import OrtInt8Module
from nnshrink.quantization.convert import float_twin, record_of
from tests.quantization.test_int8_linear import saturates_without_vnni
from tests.quantization.test_ptq import _batches


def test_convert_rebuilds_the_artefacts_without_calibrating(auto_int8):
    model, _, batches, _, result = auto_int8
    record = record_of(model)
    assert record.ort_ranges and record.fx_ranges and record.choice == result.summary.choice
    fresh = torch.randn_like(batches[0]) * 5  # a batch whose ranges differ: not used for ranges
    ort = convert(model, "onnxruntime", fresh)
    assert isinstance(ort, OrtInt8Module)
    assert ort.onnx_bytes == result.artifact.onnx_bytes  # the same graph, byte for byte
    fx = convert(model, "torch-fx", fresh)
    assert torch.equal(fx(batches[0]), result.artifact.torch_module(batches[0]))
    auto = convert(model, "auto", fresh)
    assert isinstance(auto, AutoInt8Module) and auto.choice == result.artifact.choice
    for x in (batches[0][:1], batches[0]):
        assert torch.equal(auto(x), result.artifact(x))


def test_record_survives_copy_and_pickle(auto_int8):
    model, _, batches, _, result = auto_int8
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert convert(clone, "onnxruntime", batches[0]).onnx_bytes == result.artifact.onnx_bytes


def test_float_twin_holds_the_dequantized_weights(auto_int8):
    model, _, batches, _, _ = auto_int8
    twin = float_twin(model)
    assert type(twin.conv1) is nn.Conv2d and "nnshrink_int8" not in twin.__dict__
    assert torch.equal(twin.conv1.weight, model.conv1.dequantized_weight())


def test_convert_dynamic_and_errors():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(3, 16)
    with pytest.raises(ns.ConfigError, match="no int8 calibration"):
        convert(model, "onnxruntime", x)
    ns.compress_(model, PTQ(mode="dynamic"))
    assert convert(model, "torch") is model
    ort = convert(model, "onnxruntime", x)
    assert ort.op_types()["MatMulInteger"] == 2
    with pytest.raises(ns.ConfigError, match="'onnxruntime' or 'torch'"):
        convert(model, "torch-fx", x)


@saturates_without_vnni
def test_convert_dynamic_onnxruntime_matches_the_model():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    x = torch.randn(3, 16)
    ns.compress_(model, PTQ(mode="dynamic"))
    assert torch.allclose(convert(model, "onnxruntime", x)(x), model(x), atol=0.05)


def test_convert_static_single_runtime(tiny_convnet):
    batches = _batches(1)
    result = ns.compress_(tiny_convnet, PTQ(backend="onnxruntime"), example_inputs=batches)
    assert convert(tiny_convnet, "auto", batches[0]).onnx_bytes == result.artifact.onnx_bytes
    with pytest.raises(ns.ConfigError, match="no torch-fx graph"):
        convert(tiny_convnet, "torch-fx", batches[0])
