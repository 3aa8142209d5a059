"""ONNX export: the file runs in onnxruntime and matches PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from nnshrink.export import export_onnx
from nnshrink.metrics import ort_session
from nnshrink.models import create
from tests.quantization.test_int8_linear import saturates_without_vnni


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2"])
def test_exported_model_matches_pytorch(tmp_path, name):
    model = create(name).eval()
    x = torch.randn(3, 1, 28, 28)
    data = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load_from_string(data))
    assert (tmp_path / "m.onnx").read_bytes() == data
    session = ort_session(data, threads=1)
    (out,) = session.run(None, {"input0": x.numpy()})  # dynamic batch: 3 != 1
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_training_mode_restored():
    model = create("lenet300").train()
    export_onnx(model, torch.zeros(1, 1, 28, 28))
    assert model.training


def _compressed_models():
    from nnshrink.compact import CompactReplace
    from nnshrink.core import compress_
    from nnshrink.lowrank import LowRank
    from nnshrink.pruning import StructuredPruning

    x = torch.randn(2, 1, 28, 28)
    pruned = create("resnet20")
    compress_(pruned, StructuredPruning(ratio=0.5), example_inputs=x)
    decomposed = create("resnet20")
    compress_(decomposed, LowRank(method="tucker", rank="ratio", ratio=0.5), example_inputs=x)
    cp = create("lenet5")
    compress_(cp, LowRank(method="cp", rank="ratio", ratio=0.5, n_iter_max=5), example_inputs=x)
    compact = create("vgg16", in_channels=1, input_size=28)
    compress_(compact, CompactReplace(block="dwsep"), example_inputs=x)
    return {"pruned": pruned, "tucker": decomposed, "cp": cp, "compact": compact}


def test_compressed_models_export_and_match():
    """Pruned, decomposed and compact models are ordinary modules that export and run in ORT."""
    x = torch.randn(3, 1, 28, 28)
    for name, model in _compressed_models().items():
        model.eval()
        data = export_onnx(model, torch.zeros(1, 1, 28, 28))
        (out,) = ort_session(data, threads=1).run(None, {"input0": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


@saturates_without_vnni
def test_int8_qdq_model_runs_in_onnxruntime():
    from nnshrink.core import compress_
    from nnshrink.quantization import PTQ

    model = create("lenet5").eval()
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        reference = model(x)
    result = compress_(model, PTQ(backend="onnxruntime", calibration_batches=2), example_inputs=x)
    with torch.no_grad():
        quantized = result.artifact(x)  # the model itself is now its calibrated form
    assert quantized.shape == reference.shape
    # int8 is close to fp32 (SQNR > 20 dB) and really int8 (QLinearConv or QDQ with int8 weights)
    sqnr = 10 * torch.log10(reference.pow(2).mean() / (quantized - reference).pow(2).mean())
    assert sqnr > 20
