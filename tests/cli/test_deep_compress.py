"""nnshrink deep-compress and eval on the .nns file."""

from __future__ import annotations

import json

from nnshrink.cli.main import main
from nnshrink.io import save_checkpoint
from nnshrink.models import create

from ..conftest import needs_mnist


@needs_mnist
def test_deep_compress_then_eval_and_inspect(tmp_path, capsys):
    ckpt = save_checkpoint(create("lenet300"), tmp_path / "m.safetensors")
    out = tmp_path / "m.nns"
    args = ["deep-compress", str(ckpt), "--data", "mnist", "--out", str(out), "--train-limit",
            "512", "--limit", "300", "--prune-rounds", "2", "--retrain-epochs", "0",
            "--final-epochs", "1", "--optimizer", "sgd", "--weight-decay", "1e-4",
            "--share-epochs", "0", "--json"]  # fmt: skip
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) >= {"top1", "compression_ratio", "file_bytes", "dense_bytes"}
    assert set(payload["top1"]) >= {"before", "after"}
    assert payload["file_bytes"] == out.stat().st_size
    assert payload["dense_bytes"] == 266_610 * 4 and payload["compression_ratio"] > 10
    assert main(["eval", str(out), "--data", "mnist", "--limit", "300", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["top1"] == payload["top1"]["after"]
    assert main(["inspect", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main([*args[:-1], "--sparsity", "1.5"]) == 2
    assert main([*args[:-1], "--final-epochs", "-1"]) == 2
