import copy
import pickle

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import nnshrink as ns
from nnshrink import data, models
from nnshrink.quantization.backends import backend_names, get_backend
from nnshrink.quantization.backends.ort import (
    OrtInt8Module,
    node_module,
    nodes_of_modules,
    quantize_with_ort_calibration,
)
from nnshrink.quantization.observers import make_observer
from nnshrink.quantization.ptq import PTQ
from nnshrink.train import evaluate, fit
from tests.quantization.test_ptq import sqnr_db


def _ort_int8(model, batches, **kwargs):
    """compress_ a copy with the ONNX Runtime backend; return its artefact."""
    result = ns.compress_(copy.deepcopy(model), PTQ(backend="onnxruntime", **kwargs),
                          example_inputs=batches)  # fmt: skip
    return result


def _batches(n=3, shape=(8, 1, 28, 28)):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


@pytest.fixture(scope="module")
def ort_int8():
    from tests.conftest import TinyConvNet

    torch.manual_seed(0)
    model = TinyConvNet().eval()
    batches = _batches()
    return model, batches, _ort_int8(model, batches)


def test_registry():
    assert backend_names() == ["fake", "onnxruntime", "torch-fx"]  # "auto" combines the last two
    with pytest.raises(ValueError, match="unknown quantization backend"):
        get_backend("tensorrt")


def test_ort_int8_close_to_fp32(ort_int8):
    model, batches, result = ort_int8
    q = result.artifact
    assert isinstance(q, OrtInt8Module)
    out = q(batches[1])
    assert isinstance(out, torch.Tensor) and out.shape == (8, 10)
    assert sqnr_db(model(batches[1]), out) > 25


def test_ort_graph_really_is_int8(ort_int8, tmp_path):
    _, batches, result = ort_int8
    graph = onnx.load_from_string(result.artifact.onnx_bytes).graph
    ops = result.artifact.op_types()
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= 3
    inits = {i.name: i for i in graph.initializer}
    weight_codes = [
        inits[n.input[0]]
        for n in graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8
    ]
    assert len(weight_codes) == 3  # conv1, conv2, fc weights stored as int8
    # after ONNX Runtime's graph optimisation the convs run as integer kernels
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(result.artifact.onnx_bytes, options, providers=["CPUExecutionProvider"])
    optimized = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    assert "QLinearConv" in optimized


def test_ort_uses_our_observer_ranges(ort_int8):
    _, batches, result = ort_int8
    obs = make_observer("minmax")
    for b in batches:
        obs.update(b)
    scale, zp = obs.qparams()
    graph = onnx.load_from_string(result.artifact.onnx_bytes).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    q_input = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert np.isclose(float(inits[q_input.input[1]]), float(scale), rtol=1e-5)
    assert int(inits[q_input.input[2]]) == int(zp)
    rows = {r["tensor"]: r for r in result.summary.ranges}
    assert rows["input"]["min"] == pytest.approx(float(torch.cat(batches).min()))


def test_ort_module_save_pickle_copy(ort_int8, tmp_path):
    _, batches, result = ort_int8
    q = result.artifact
    ref = q(batches[0])
    path = tmp_path / "int8.onnx"
    q.save(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"input": batches[0].numpy()})
    assert np.allclose(out, ref.numpy())
    for clone in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
        assert torch.equal(clone(batches[0]), ref)
    with pytest.raises(ValueError, match="expects 1 input"):
        q(batches[0], batches[0])


def test_ort_percentile_and_baseline(tiny_convnet):
    model = tiny_convnet.eval()
    batches = _batches()
    ours = _ort_int8(model, batches, observer="percentile").artifact
    theirs = quantize_with_ort_calibration(model, batches)
    ref = model(batches[0])
    assert sqnr_db(ref, ours(batches[0])) > 20
    assert sqnr_db(ref, theirs(batches[0])) > 20


def test_excluded_layers_keep_float_nodes(tiny_convnet):
    result = _ort_int8(tiny_convnet.eval(), _batches(1), exclude=("fc",))
    graph = onnx.load_from_string(result.artifact.onnx_bytes).graph
    owners = {node_module(n.name) for n in graph.node if n.op_type == "DequantizeLinear"}
    gemm = next(n for n in graph.node if node_module(n.name) == "fc")
    assert "fc" not in owners  # no DequantizeLinear feeds the excluded Gemm
    assert not any(name.endswith("DequantizeLinear") for name in gemm.input)
    assert nodes_of_modules(onnx.load_from_string(result.artifact.onnx_bytes), ["conv1"])
    assert result.summary.skipped == {"fc": "excluded by include/exclude/per_layer/filter_fn"}


def test_node_module_names():
    assert node_module("/m/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert node_module("/m/conv1/Conv") == "conv1"
    assert node_module("/m/encoder/layer.0/output/dense/MatMul") == "encoder.layer.0.output.dense"
    assert node_module("QuantizeLinear_3") is None


@pytest.fixture(scope="module")
def trained_lenet5():
    try:
        train = data.loader("fashion-mnist", "train", 64, train=True, limit=1536)
        test = data.loader("fashion-mnist", "test", 500, limit=2000)
    except data.DataNotFoundError as exc:
        pytest.skip(f"Fashion-MNIST not available: {exc}")
    model = models.create("lenet5")
    fit(model, train, epochs=1, lr=2e-3, optimizer="adam", weight_decay=0.0, progress=False)
    return model.eval(), train, test


@pytest.mark.slow
def test_int8_lenet5_accuracy_within_half_a_point(trained_lenet5):
    model, train, test = trained_lenet5
    calib = [x for (x, _), _ in zip(train, range(4))]
    fp32 = evaluate(model, test)["top1"]
    int8 = _ort_int8(model, calib).artifact
    top1 = evaluate(int8, test)["top1"]
    assert fp32 > 0.6  # it did learn
    assert abs(fp32 - top1) <= 0.005 + 1e-9  # 0.5 points
