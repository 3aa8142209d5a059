import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import nnshrink as ns
from nnshrink import models
from nnshrink.quantization.backends.ort import OrtInt8Module, quantize_with_ort_calibration
from nnshrink.quantization.backends.qdq_passes import quantize_zero_pads
from nnshrink.quantization.ptq import PTQ


def _optimized_ops(onnx_bytes: bytes, tmp_path) -> collections.Counter:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return collections.Counter(
        n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node
    )


@pytest.fixture(scope="module")
def resnet_int8():
    torch.manual_seed(0)
    model = models.create("resnet20", in_channels=3, input_size=16).eval()
    calib = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    return quantize_with_ort_calibration(model, calib, threads=1)


def test_zero_pad_rewrite_is_bit_exact(resnet_int8, tmp_path):
    graph = onnx.load_from_string(resnet_int8.onnx_bytes)
    assert quantize_zero_pads(graph) == 2  # the two option-A down-sampling shortcuts
    onnx.checker.check_model(graph)
    rewritten = OrtInt8Module(graph.SerializeToString(), threads=1)
    x = torch.randn(3, 3, 16, 16)
    # oracle: ORT's own QDQ graph; padding with the zero point must not change a single bit
    assert torch.equal(rewritten(x), resnet_int8(x))
    before = _optimized_ops(resnet_int8.onnx_bytes, tmp_path)
    after = _optimized_ops(rewritten.onnx_bytes, tmp_path)
    assert before["DequantizeLinear"] - after["DequantizeLinear"] == 2
    assert before["QuantizeLinear"] - after["QuantizeLinear"] == 2
    assert after["QLinearConv"] == before["QLinearConv"]


def test_ptq_onnxruntime_backend_applies_the_pass(tmp_path):
    torch.manual_seed(0)
    model = models.create("resnet20", in_channels=3, input_size=16).eval()
    calib = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    q = ns.compress_(model, PTQ(backend="onnxruntime"), example_inputs=calib).artifact
    pads = [n for n in onnx.load_from_string(q.onnx_bytes).graph.node if n.op_type == "Pad"]
    assert len(pads) == 2
    produced_by = {o: n.op_type for n in onnx.load_from_string(q.onnx_bytes).graph.node
                   for o in n.output}  # fmt: skip
    assert all(produced_by[p.input[0]] != "DequantizeLinear" for p in pads)


def _pad_graph(fill: float | None, q_zero: int = 3) -> onnx.ModelProto:
    """x(uint8) -> DQ(s, z=3) -> Pad(fill) -> Q(s, z') -> DQ -> y(float)."""
    inits = [
        numpy_helper.from_array(np.array(0.5, np.float32), "s"),
        numpy_helper.from_array(np.array(3, np.uint8), "z"),
        numpy_helper.from_array(np.array(q_zero, np.uint8), "z2"),
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 2, 0, 0], np.int64), "pads"),
    ]
    pad_inputs = ["xf", "pads"]
    if fill is not None:
        inits.append(numpy_helper.from_array(np.array(fill, np.float32), "fill"))
        pad_inputs.append("fill")
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"]),
        helper.make_node("Pad", pad_inputs, ["p"], name="pad"),
        helper.make_node("QuantizeLinear", ["p", "s", "z2"], ["pq"]),
        helper.make_node("DequantizeLinear", ["pq", "s", "z2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 2, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("fill", [None, 0.0])
def test_rewrite_pads_with_the_zero_point(fill):
    model = _pad_graph(fill)
    x = np.arange(8, dtype=np.uint8).reshape(1, 2, 2, 2) + 1
    expected = _run(model, x)
    assert quantize_zero_pads(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["Pad", "DequantizeLinear"]
    np.testing.assert_array_equal(_run(model, x), expected)
    assert (expected[:, 2:] == 0).all()  # padded channels dequantize to exactly zero


def test_leaves_nonzero_fill_and_mismatched_zero_points_alone():
    assert quantize_zero_pads(_pad_graph(1.0)) == 0
    assert quantize_zero_pads(_pad_graph(None, q_zero=4)) == 0
