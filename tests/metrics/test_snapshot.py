"""snapshot(): every criterion for one model state."""

from __future__ import annotations

import torch

from nnshrink.data import TensorLoader
from nnshrink.metrics import snapshot
from nnshrink.models import create


def test_snapshot_keys_and_values():
    model = create("lenet300")
    x = torch.zeros(2, 1, 28, 28)
    loader = TensorLoader(torch.rand(20, 1, 28, 28), torch.randint(0, 10, (20,)), 8)
    s = snapshot(model, x, loader, threads=1, runs=3)
    assert s["params"] == 266_610 and s["macs"] == 266_200 and s["flops"] == 532_400
    assert s["size_bytes"] == 266_610 * 4
    assert s["latency_ms"] > 0 and s["latency_onnx_ms"] > 0 and s["latency_batch"] == 2
    assert 0 <= s["top1"] <= 1 and s["samples"] == 20


def test_snapshot_without_latency_and_size_override():
    s = snapshot(create("lenet5"), torch.zeros(1, 1, 28, 28), latency=False, size_bytes=123)
    assert "latency_ms" not in s and s["size_bytes"] == 123
