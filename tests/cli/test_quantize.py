import json

import onnx
import pytest

from nnshrink.cli.main import main
from nnshrink.data import DataNotFoundError, load


def _have_fashion_mnist() -> bool:
    try:
        load("fashion-mnist", "test")
    except DataNotFoundError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _have_fashion_mnist(), reason="Fashion-MNIST not available")

COMMON = [
    "--data",
    "fashion-mnist",
    "--limit",
    "200",
    "--train-limit",
    "256",
    "--batch-size",
    "64",
    "--runs",
    "3",
    "--calibration-batches",
    "2",
    "--json",
]


def _run(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_quantize_int8_onnxruntime(tmp_path, capsys):
    out = tmp_path / "lenet5-int8.onnx"
    report = _run(
        capsys,
        ["quantize", "lenet5", "--method", "int8", "--observer", "mse", "--out", str(out), *COMMON],
    )
    for key in ("top1", "size_bytes", "latency_ms"):
        assert {"before", "after"} <= set(report[key])
    assert report["size_bytes"]["ratio"] > 3  # fp32 params vs int8 file
    assert report["details"]["config"]["observer"] == "mse"
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert "QuantizeLinear" in ops


def test_quantize_int8_fake_low_bits(tmp_path, capsys):
    out = tmp_path / "lenet5-4bit.nns"  # no pickles: the simulated layers, compressed
    report = _run(
        capsys,
        ["quantize", "lenet5", "--method", "int8", "--bits", "4", "--out", str(out), *COMMON],
    )
    assert report["details"]["config"]["backend"] == "fake"
    assert out.exists()


def test_quantize_qat(tmp_path, capsys):
    out = tmp_path / "mlp-qat.onnx"
    report = _run(
        capsys,
        ["quantize", "lenet300", "--method", "qat", "--epochs", "1", "--out", str(out), *COMMON],
    )
    assert report["details"]["config"]["type"] == "qat"
    assert out.exists()


def test_quantize_other_methods_map_to_their_configs(tmp_path, capsys):
    from nnshrink.core import config_types

    if "weight-sharing" not in config_types():
        pytest.skip("weight sharing not available")
    report = _run(
        capsys,
        [
            "quantize",
            "lenet300",
            "--method",
            "kmeans",
            "--bits",
            "4",
            "--out",
            str(tmp_path / "k.safetensors"),
            *COMMON,
        ],
    )
    assert report["details"]["config"] == {
        **report["details"]["config"],
        "type": "weight-sharing",
        "bits": 4,
    }


def test_quantize_bad_bits(tmp_path, capsys):
    assert (
        main(
            [
                "quantize",
                "lenet5",
                "--method",
                "int8",
                "--bits",
                "12",
                "--out",
                str(tmp_path / "x"),
                *COMMON,
            ]
        )
        == 2
    )
    assert "--bits" in capsys.readouterr().err
