"""Before/after report: ratios, deltas, rendering."""

from __future__ import annotations

import json

import pytest

from nnshrink.metrics import Report


def _report():
    before = {"params": 1000, "macs": 400, "size_bytes": 4000, "latency_ms": 2.0, "top1": 0.99}
    after = {"params": 100, "macs": 200, "size_bytes": 100, "latency_ms": 0.5, "top1": 0.985}
    return Report(before, after, title="t", details={"layers": [1, 2]})


def test_ratios_and_changes():
    d = _report().to_dict()
    assert d["params"] == {"before": 1000, "after": 100, "ratio": 10.0}
    assert d["size_bytes"]["ratio"] == 40.0
    assert d["latency_ms"]["ratio"] == 4.0
    assert d["top1"]["change"] == pytest.approx(-0.005)
    assert d["details"] == {"layers": [1, 2]}


def test_missing_keys_skipped_and_none_tolerated():
    r = Report({"params": 10, "latency_onnx_ms": None}, {"params": 5, "latency_onnx_ms": 1.0})
    assert r.keys() == ["params", "latency_onnx_ms"]
    assert r.to_dict()["latency_onnx_ms"]["ratio"] is None


def test_renderings():
    r = _report()
    md = r.to_markdown()
    assert "| parameters | 1,000 | 100 | 10.00x |" in md
    assert "| top-1 | 99.00% | 98.50% | -0.50 pt |" in md
    assert json.loads(r.to_json())["macs"]["ratio"] == 2.0
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(r.to_rich())
    assert "4.00x" in console.export_text()
