import copy

import torch
from torch import nn

from nnshrink.quantization.backends.auto import AutoInt8Module, batch_of, time_runtimes
from nnshrink.quantization.backends.ort import export_fp32_onnx


def test_batch_of_repeats_and_cuts():
    x = torch.arange(6.0).reshape(3, 2)
    (y,) = batch_of((x,), 7)
    assert y.shape == (7, 2) and torch.equal(y[3:6], x)
    (z,) = batch_of((x,), 2)
    assert torch.equal(z, x[:2])


def test_time_runtimes_picks_the_faster():
    slow = nn.Sequential(*[nn.Linear(64, 64) for _ in range(30)])
    fast = nn.Linear(64, 64)
    timings, choice = time_runtimes({"slow": slow, "fast": fast}, (torch.randn(2, 64),), (1, 8))
    assert choice == {1: "fast", 8: "fast"} and set(timings[1]) == {"slow", "fast"}


def test_auto_module_dispatches_by_batch_size():
    torch.manual_seed(0)
    model = nn.Linear(4, 3).eval()
    onnx_bytes = export_fp32_onnx(model, (torch.randn(2, 4),))
    marker = nn.Linear(4, 3)  # a different "PyTorch path": outputs tell which one ran
    auto = AutoInt8Module(onnx_bytes, marker, {1: "onnxruntime", 8: "torch-fx"})
    x1, x9 = torch.randn(1, 4), torch.randn(9, 4)
    with torch.no_grad():
        assert torch.allclose(auto(x1), model(x1), atol=1e-6)
        assert torch.equal(auto(x9), marker(x9))
    assert [auto.runtime_for(n) for n in (1, 7, 8, 100)] == [
        "onnxruntime", "onnxruntime", "torch-fx", "torch-fx"]  # fmt: skip
    clone = copy.deepcopy(auto)
    with torch.no_grad():
        assert torch.equal(clone(x9), auto(x9)) and clone.choice == auto.choice
    assert "b1: onnxruntime" in repr(auto)
