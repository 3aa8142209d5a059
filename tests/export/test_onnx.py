"""ONNX export: the file runs in onnxruntime and matches PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from nnshrink.export import export_onnx
from nnshrink.metrics import ort_session
from nnshrink.models import create


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
