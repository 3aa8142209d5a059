"""Fuzzing the readers: every damaged or crafted file is refused with FormatError / CheckpointError,
imports nothing, runs nothing, and allocates at most a small multiple of its size."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn

from nnshrink.io import CheckpointError, load_checkpoint, save_checkpoint
from nnshrink.models import create
from nnshrink.storage import FormatError, load, save
from nnshrink.storage.fuzz import HOSTILE_MODULES, mutations, run_case

MEMORY_CONSTANT = 48 << 20  # the 16 MiB decode floor plus decoder temporaries and Python objects


def _model() -> nn.Module:
    """A small zoo model holding most encodings and both kinds of edits."""
    torch.manual_seed(0)
    model = create("mlp", widths=[24, 16], input_size=6)
    with torch.no_grad():
        w = model[1].weight  # pruned + shared: sparse_codebook with Huffman streams
        w[w.abs() < w.abs().flatten().quantile(0.8)] = 0
        w[w != 0] = torch.tensor([-0.25, 0.5])[(w[w != 0] > 0).long()]
        model[3].weight.copy_(0.3 * torch.randint(-1, 2, model[3].weight.shape))  # ternary
    model[5] = nn.Linear(16, 4)  # a structural edit
    model[2].note = "edited"  # an attribute edit
    return model.eval()


def _check(outcomes, fmt):
    results = collections.Counter(o.result for o in outcomes)
    bad = [o for o in outcomes if o.result != "refused" or o.new_modules or o.code_ran]
    assert not bad, (
        f"{fmt}: {[(o.kind, o.label, o.result, o.error, o.new_modules) for o in bad][:5]}"
    )
    heavy = [o for o in outcomes if o.peak_bytes > 10 * o.file_bytes + MEMORY_CONSTANT]
    assert not heavy, [(o.label, o.peak_bytes) for o in heavy]
    assert results["refused"] == len(outcomes) > 150
    kinds = collections.Counter(o.kind for o in outcomes)
    assert kinds["truncate"] > 30 and kinds["flip"] > 50 and kinds["crafted"] > 40
    assert kinds["field"] == 60
    for name in HOSTILE_MODULES:
        assert name not in __import__("sys").modules


@pytest.fixture
def warm(tmp_path):
    """One valid load first: lazy imports of torch/numpy internals are not the file's doing."""
    model = _model()
    save(model, tmp_path / "warm.nns", huffman=True)
    load(tmp_path / "warm.nns")
    save_checkpoint(model, tmp_path / "warm.safetensors")
    load_checkpoint(tmp_path / "warm.safetensors")
    return model


def test_fuzz_nns(tmp_path, warm):
    path = tmp_path / "base.nns"
    report = save(warm, path, encoding={"3.weight": "ternary", "3.bias": "codebook"}, min_numel=8)
    assert {r.encoding for r in report} >= {"sparse_codebook", "ternary", "codebook", "dense"}
    data = path.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    outcomes = [
        run_case(kind, label, bad, load, FormatError, work)
        for kind, label, bad in mutations(
            data, "nns", work, seed=1, truncations=40, flips=60, fields=60
        )
    ]
    _check(outcomes, "nns")


def test_fuzz_safetensors(tmp_path, warm):
    path = save_checkpoint(warm, tmp_path / "base.safetensors")
    data = path.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    outcomes = [
        run_case(kind, label, bad, load_checkpoint, CheckpointError, work)
        for kind, label, bad in mutations(
            data, "safetensors", work, seed=2, truncations=40, flips=60, fields=60
        )  # fmt: skip
    ]
    _check(outcomes, "safetensors")
