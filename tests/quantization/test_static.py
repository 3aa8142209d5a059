"""Static int8 through compress_: the calibrated model in place, the runtime artefact beside it."""

import onnx
import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.quantization import PTQ
from nnshrink.quantization.backends.auto import AutoInt8Module
from nnshrink.quantization.backends.fake import QuantizedLayer
from nnshrink.quantization.backends.ort_module import OrtInt8Module
from nnshrink.quantization.backends.torch_ao import quantized_module_count
from nnshrink.quantization.int8_linear import dequantize_codes
from tests.quantization.test_int8_linear import bound, saturates_without_vnni
from tests.quantization.test_ptq import _batches, sqnr_db


def test_auto_builds_both_runtimes_and_records_the_choice(auto_int8):
    model, _, batches, ref, result = auto_int8
    art = result.artifact
    assert isinstance(art, AutoInt8Module) and isinstance(art, OrtInt8Module)
    assert quantized_module_count(art.torch_module) >= 3
    summary = result.summary
    assert set(summary.timings) == {1, 4} and set(summary.timings[1]) == {"onnxruntime", "torch-fx"}
    for size, runtime in summary.choice.items():
        assert runtime == min(summary.timings[size], key=summary.timings[size].get)
        assert art.runtime_for(size) == runtime
    assert summary.runtime.startswith("auto (b1: ")
    assert art.runtime_for(100) == summary.choice[4] and art.runtime_for(2) == summary.choice[1]
    for x in (batches[0][:1], batches[0]):
        assert sqnr_db(ref[: len(x)], art(x)) > 20
    assert sqnr_db(ref, OrtInt8Module.forward(art, batches[0])) > 20  # each path is int8
    assert sqnr_db(ref, art.torch_module(batches[0])) > 20
    assert art.op_types()["QuantizeLinear"] >= 3


def test_model_is_edited_in_place_into_its_calibrated_form(auto_int8):
    model, bn, batches, ref, result = auto_int8
    assert model is not result.artifact
    assert isinstance(model.conv1, QuantizedLayer) and model.conv1.frozen
    assert isinstance(model.bn1, nn.Identity) and bn is not model.bn1  # BN folded
    assert model.conv1.weight_q.dtype == torch.int8
    assert sqnr_db(ref, model(batches[0])) > 20  # it simulates the int8 graph in PyTorch
    rows = {r["name"]: r for r in result.summary.layers}
    assert set(rows) == {"conv1", "conv2", "fc"}
    # the activation qparams of the calibrated form are the ONNX graph's
    graph = onnx.load_from_string(result.artifact.onnx_bytes).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    q_input = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert float(inits[q_input.input[1]]) == pytest.approx(rows["conv1"]["act_scale"], rel=1e-5)
    assert int(inits[q_input.input[2]]) == rows["conv1"]["act_zero_point"]
    assert result.after["params"] < result.before["params"]  # weights are int8 buffers now


@saturates_without_vnni
def test_static_single_linear_within_int8_bound():
    """One Linear, static ONNX Runtime graph: input, weights and output on int8 grids.

    The docstring bound of test_int8_linear (activation step s_x, weight steps s_w) plus the
    output quantization: |error| <= bound + s_y, with s_y the output step.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16)).eval()
    x = torch.randn(64, 32)
    ref = model(x).double().detach()
    weight = model[0].weight.detach().clone()
    result = ns.compress_(model, PTQ(backend="onnxruntime", observer="minmax"), example_inputs=x)
    out = result.artifact(x).double()
    s_x = float(x.max() - x.min()) / 255
    s_y = float(ref.max() - ref.min().clamp(max=0)) / 255
    w_steps = dequantize_codes(torch.ones_like(model[0].weight_q), model[0].weight_scale[:, None])
    limit = bound(x, weight, w_steps, s_x) + s_y
    assert bool(((out - ref).abs() <= limit).all())


def test_static_exclude_and_fx_only(tiny_convnet):
    batches = _batches(2)
    result = ns.compress_(tiny_convnet, PTQ(backend="torch-fx", exclude=("conv1",)),
                          example_inputs=batches)  # fmt: skip
    fx = result.artifact
    assert type(fx.conv1).__module__.startswith("torch.nn")  # left float
    assert not isinstance(tiny_convnet.conv1, QuantizedLayer)
    assert isinstance(tiny_convnet.conv2, QuantizedLayer)
    assert result.summary.choice == {1: "torch-fx", 64: "torch-fx"}


def test_macs_are_kept_by_the_int8_layers(tiny_convnet):
    x = torch.randn(2, 1, 28, 28)
    before = ns.metrics.count_macs_per_sample(tiny_convnet, x)
    ns.compress_(tiny_convnet, PTQ(backend="fake"), example_inputs=x)
    assert ns.metrics.count_macs_per_sample(tiny_convnet, x) == before
    mlp = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4))
    ns.compress_(mlp, PTQ(mode="dynamic"))
    assert ns.metrics.count_macs_per_sample(mlp, torch.zeros(3, 8)) == 8 * 16 + 16 * 4
