"""The user-model issue's "done when", from the CLI: a model, plain DataLoaders and a metric that
nnshrink has never seen (``tests.usercode``), named by reference, through train -> eval ->
structured prune -> deep-compress -> ``.nns`` eval -> a recipe -> advise.

Oracles: the unpruned model's own accuracy (every compressed model is judged against it), the
user's metric against top-1 (``error == 1 - top1`` on the same batches), MACs and file sizes
counted again here, and the advisor's recipe run again by ``nnshrink run``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from nnshrink.cli.main import main
from nnshrink.io import load_checkpoint
from nnshrink.metrics import count_macs

MODEL, DATA, METRIC = "tests.usercode:make_model", "tests.usercode:make_data", "tests.usercode:error_rate"  # fmt: skip
X = torch.zeros(1, 1, 12, 12)


def _cli(capsys, *args) -> dict:
    status = main([*map(str, args), "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    return json.loads(captured.out)


def _eval(capsys, model, *extra) -> dict:
    return _cli(capsys, "eval", model, "--trust-code", "--data", DATA, *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``nnshrink train`` of the user's factory on the user's loaders."""
    torch.manual_seed(0)
    torch.set_num_threads(2)  # more threads than cores only spin on this shared machine
    path = tmp_path_factory.mktemp("user") / "m.safetensors"
    status = main(["train", "--model", MODEL, "--data", DATA, "--batch-size", "16", "--epochs",
                   "6", "--lr", "0.02", "--out", str(path), "--json"])  # fmt: skip
    assert status == 0 and path.is_file()
    return path


def test_user_model_from_train_to_advise(trained, tmp_path, capsys):
    # eval: top-1 by default, the user's metric by reference (same batches: error = 1 - top1)
    dense = _eval(capsys, trained)
    assert dense["top1"] >= 0.8, dense  # three easy blobs: the user's model learned them
    error = _eval(capsys, trained, "--metric", METRIC)
    assert error["error"] == pytest.approx(1 - dense["top1"], abs=1e-9)
    dense_macs = count_macs(load_checkpoint(trained, trust_code=True)[0], (X,))

    # structured prune (the spelling valid before and after the ratio -> sparsity rename)
    pruned_path = tmp_path / "p.safetensors"
    _cli(capsys, "prune", trained, "--trust-code", "--data", DATA, "--method",
         "structured-pruning", "--ratio", "0.5", "--finetune-epochs", "2", "--lr", "0.01",
         "--batch-size", "16", "--no-latency",
         "--out", pruned_path)  # fmt: skip
    pruned = load_checkpoint(pruned_path, trust_code=True)[0]
    assert count_macs(pruned, (X,)) < 0.6 * dense_macs  # physically smaller
    assert _eval(capsys, pruned_path)["top1"] >= dense["top1"] - 0.1

    # deep compression to a .nns file as a recipe (prune, fine-tune, share, encode), by
    # `nnshrink run` on the user's references; the file is evaluated like any model
    recipe = {
        "name": "user-deep-compression",
        "model": {"checkpoint": str(trained), "trust_code": True},
        "data": {"factory": DATA},
        "metric": METRIC,
        "stages": [
            {"prune": {"type": "magnitude-pruning", "sparsity": 0.5}},
            {"finetune": {"epochs": 2, "lr": 0.005}},
            {"share": {"type": "weight-sharing", "bits": 5}},
            {"encode": {}},
        ],
    }  # fmt: skip
    recipe_path = tmp_path / "deep.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    run = _cli(capsys, "run", recipe_path, "--out", tmp_path / "deep")
    nns = tmp_path / "deep" / "model.nns"
    # the file really holds 5-bit shared, half-zero weights (a 723-parameter model is smaller
    # than the .nns container's fixed records, so bytes alone would not show it)
    from nnshrink.storage import load as load_nns

    zeros = total = 0
    for name, layer in load_nns(nns, trust_code=True).named_modules():
        if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
            w = layer.weight.detach()
            assert torch.unique(w).numel() <= 2**5 + 1, name  # 32 centroids (+ the pruned 0)
            assert bool((w != 0).any()), name  # one global threshold, no layer emptied
            zeros, total = zeros + int((w == 0).sum()), total + w.numel()
    assert zeros / total >= 0.45  # half of all weights (the default ranks them together)
    on_file = _eval(capsys, nns, "--metric", METRIC)
    assert on_file["error"] <= error["error"] + 0.1  # within 10 points of the unpruned model
    assert json.dumps(run)  # the run reported

    # advise, on the same references: selects on a held-back part of train (make_data has no
    # val), judges the drop in the metric's own units, and writes a recipe naming them
    out = tmp_path / "adv"
    budget = int(0.6 * dense_macs)
    status = main(["advise", str(trained), "--trust-code", "--data", DATA, "--metric", METRIC,
                   "--max-macs", str(budget), "--max-drop", "0.1", "--time-limit", "40",
                   "--max-candidates", "2", "--no-sensitivity", "--out", str(out), "--json"])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err[-2000:]
    advice = json.loads(captured.out)
    assert advice["selection_split"] == "train-holdout"
    chosen = advice["chosen"]
    assert chosen["meets"] and chosen["measurement"]["macs"] <= budget
    emitted = yaml.safe_load((out / "recipe.yaml").read_text())
    assert emitted["data"]["factory"] == DATA and emitted["metric"] == METRIC
    assert emitted["model"]["trust_code"] is True
    # the emitted recipe runs as it is, and its model is judged against the unpruned one
    again = _cli(capsys, "run", out / "recipe.yaml", "--out", tmp_path / "again")
    assert json.dumps(again)
    stages = sorted((tmp_path / "again" / "stages").glob("[0-9]*"))
    final = stages[-1]  # the last stage's model
    rerun = _eval(capsys, final, "--metric", METRIC)
    # judged against the unpruned model on test: the budget's 0.1, plus the gap between the
    # 38 held-back samples it was selected on and the 192 test samples
    assert rerun["error"] <= error["error"] + 0.15
    if final.suffix == ".safetensors":
        assert count_macs(load_checkpoint(final, trust_code=True)[0], (X,)) <= budget


def test_deep_compress_command_on_a_factory_built_model(trained, tmp_path, capsys):
    out = tmp_path / "m.nns"
    _cli(capsys, "deep-compress", trained, "--trust-code", "--data", DATA, "--sparsity", "0.5",
         "--prune-rounds", "1", "--retrain-epochs", "1", "--share-epochs", "1", "--out", out)  # fmt: skip
    assert _eval(capsys, out)["top1"] > 0
