"""nnshrink profile."""

from __future__ import annotations

import json

from nnshrink.cli.main import main
from nnshrink.io import save_checkpoint
from nnshrink.models import create


def test_profile_lenet300_json(capsys):
    assert main(["profile", "--model", "lenet300", "--json", "--runs", "3", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == 266_610 and out["macs"] == 266_200
    assert out["size_bytes"] == 266_610 * 4
    assert out["latency_ms"] > 0 and out["latency_onnx_ms"] > 0
    assert [row["name"] for row in out["layers"]] == ["1", "3", "5"]


def test_profile_checkpoint_and_input_shape(tmp_path, capsys):
    path = save_checkpoint(
        create("resnet20", in_channels=3, input_size=32), tmp_path / "r.safetensors"
    )
    assert main(["profile", str(path), "--json", "--no-latency"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["input_shape"] == [1, 3, 32, 32] and out["macs"] == 40_551_040
    args = ["profile", "--model", "vgg16", "--input-shape", "2,3,32,32", "--json", "--no-latency"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["input_shape"] == [2, 3, 32, 32]


def test_profile_table_and_errors(tmp_path, capsys):
    assert main(["profile", "--model", "lenet5", "--no-latency"]) == 0
    assert "2,293,000" in capsys.readouterr().out
    assert main(["profile"]) == 2
    assert main(["profile", "--model", "lenet5", "--input-shape", "1,3,x"]) == 2
    path = save_checkpoint(create("lenet300"), tmp_path / "l.safetensors")
    assert main(["profile", str(path), "--input-shape", "1,1,5,5", "--no-latency"]) == 2
    assert "does not run on input shape" in capsys.readouterr().err
