"""``nnshrink inspect``: table and JSON output agree with the storage report; clear errors."""

from __future__ import annotations

import json

import torch
from torch import nn

from nnshrink.cli.main import main
from nnshrink.storage import save, storage_report


def _nns(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        w = model[1].weight
        w[w.abs() < w.abs().flatten().quantile(0.9)] = 0
    path = tmp_path / "m.nns"
    save(model, path, metrics={"top1": 0.91}, metadata={"note": "tiny"})
    return path


def test_json_output_matches_report(tmp_path, capsys):
    path = _nns(tmp_path)
    assert main(["inspect", str(path), "--json", "--verify"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["report"] == json.loads(json.dumps(storage_report(path).to_dict()))
    assert info["metrics"] == {"top1": 0.91} and info["metadata"] == {"note": "tiny"}
    assert info["verified"] is True
    assert info["tensors"]["1.weight"]["encoding"] == "sparse"
    assert info["architecture"]["module"]["class"] == "torch.nn.modules.container.Sequential"


def test_table_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich would squeeze the 12 columns into 80
    path = _nns(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    for text in ("1.weight", "sparse", "total", "top1", "file size"):
        assert text in out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.nns")]) == 2
    assert "no such file" in capsys.readouterr().err
    path = _nns(tmp_path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert main(["inspect", str(path)]) == 0  # the header alone is intact
    capsys.readouterr()
    assert main(["inspect", str(path), "--verify"]) == 2
    assert "CRC32 mismatch" in capsys.readouterr().err
    path.write_bytes(b"PK\x03\x04" + bytes(40))
    assert main(["inspect", str(path)]) == 2
    assert "not an nnshrink .nns file" in capsys.readouterr().err
