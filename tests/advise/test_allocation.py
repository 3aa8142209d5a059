"""The allocator and the ``*-sens`` candidates built from sensitivity tables.

Oracles: brute force over every combination of a tiny option table (the allocator's optimum);
the recipe of a generated candidate is run and its ``.nns`` file measured against the budget;
the structured candidate's model is pruned and its channel counts and MACs checked.
"""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch

from nnshrink.advise import Budget, allocate, measure_sensitivity, sensitivity_candidates, zero_shot
from nnshrink.advise.allocation import monotone, storage_options
from nnshrink.advise.budget import Measurement
from nnshrink.advise.sensitivity import LayerSensitivity, Sensitivity
from nnshrink.core import compress_

from ..conftest import needs_mnist


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: a second intra-op thread only adds synchronisation (and the suite shares
    # the machine's cores)
    torch.set_num_threads(1)


def _brute(options, budget):
    best = None
    names = list(options)
    for combo in itertools.product(*(range(len(options[n])) for n in names)):
        cost = sum(options[n][i][0] for n, i in zip(names, combo))
        drop = sum(options[n][i][1] for n, i in zip(names, combo))
        if cost <= budget and (best is None or drop < best - 1e-12):
            best = drop
    return best


@pytest.mark.parametrize("seed", range(8))
def test_allocate_matches_brute_force_on_small_tables(seed):
    rng = random.Random(seed)
    options = {f"l{k}": [(rng.randint(0, 12), round(rng.random(), 3)) for _ in range(rng.randint(1, 4))]
               for k in range(4)}  # fmt: skip
    budget = rng.randint(5, 40)
    picks = allocate(options, budget, resolution=budget)  # integer costs: the grid is exact
    optimum = _brute(options, budget)
    if optimum is None:
        assert picks is None
        return
    assert picks is not None and set(picks) == set(options)
    assert sum(options[n][i][0] for n, i in picks.items()) <= budget
    assert sum(options[n][i][1] for n, i in picks.items()) == pytest.approx(optimum, abs=1e-9)


def test_allocate_meets_any_budget_and_prefers_insensitive_layers():
    # same sizes; "robust" loses nothing at 2 bits, "fragile" a lot: only robust is squeezed
    bits = (8, 4, 2)
    sizes = {"fragile": 1000, "robust": 1000}
    drops = {"fragile": {8: 0.0, 4: 0.02, 2: 0.3}, "robust": {8: 0.0, 4: 0.0, 2: 0.001}}
    options = {n: [(b * sizes[n], drops[n][b]) for b in bits] for n in sizes}
    picks = allocate(options, budget=10_500, resolution=777)  # a grid that does not divide costs
    assert {n: bits[i] for n, i in picks.items()} == {"fragile": 8, "robust": 2}
    assert allocate(options, budget=3_999) is None  # below 2 + 2 bits
    # ties go to the gentler setting (more of the budget used)
    assert allocate({"a": [(8, 0.0), (4, 0.0)]}, budget=8) == {"a": 0}


def test_monotone_clips_noise():
    assert monotone({8: 0.0, 4: -0.01, 2: 0.2}, stronger_first=True) == {8: 0.0, 4: 0.0, 2: 0.2}
    assert monotone({0.5: 0.03, 0.9: 0.01}) == {0.5: 0.03, 0.9: 0.03}


def _synthetic() -> Sensitivity:
    big = LayerSensitivity("big", "Linear", 100_000, bits={8: 0, 6: 0, 5: 0, 4: 0, 3: 0, 2: 0.001},
                           sparsity={0.5: 0.0, 0.9: 0.001})  # fmt: skip
    small = LayerSensitivity("small", "Linear", 10_000, bits={8: 0, 6: 0, 5: 0.01, 4: 0.05, 3: 0.2,
                                                               2: 0.5}, sparsity={0.5: 0.1, 0.9: 0.5})  # fmt: skip
    return Sensitivity(0.9, 0, [big, small], 100)


def test_storage_candidate_squeezes_the_insensitive_layer():
    # 2-bit sharing alone cannot reach 20 KB: the big robust layer is pruned too
    budget = Budget(max_bytes=20_000)
    (cand,) = sensitivity_candidates(budget, Measurement(), _synthetic())  # no probe: the estimate
    assert cand.name == "prune-share-sens" and cand.family == "prune-share-sens"
    stages = {next(iter(s)): next(iter(s.values())) for s in cand.stages}
    share = stages["share"]["per_layer"]
    assert share["big"] < share["small"] and share["small"] >= 6
    assert stages["prune"]["per_layer"] == {"big": 0.9}  # the last of two pruning steps
    # the allocation's estimated bytes fit the limit with the 3 % margin
    opts = storage_options(_synthetic(), prune=True)
    chosen = {n: next(c for c, _, s in o if s == (stages["prune"]["per_layer"].get(n, 0.0),
                                                   share[n])) for n, o in opts.items()}  # fmt: skip
    assert 1024 + sum(chosen.values()) <= 0.97 * 20_000
    # no data: sharing only, no pruning and no training stage
    (df,) = sensitivity_candidates(Budget(max_bytes=40_000, finetune=False), Measurement(),
                                   _synthetic())  # fmt: skip
    assert df.name == "share-sens" and [next(iter(s)) for s in df.stages] == ["share", "encode"]


@needs_mnist
@pytest.mark.parametrize("finetune", [False, True])
def test_storage_candidate_recipe_runs_and_meets_the_budget(tmp_path, finetune):
    from nnshrink.data import loader
    from nnshrink.io import save_checkpoint
    from nnshrink.models import create
    from nnshrink.recipes import parse_recipe, run_recipe

    torch.manual_seed(0)
    model = create("mlp", widths=(32,))  # 25k weights: quick k-means and encoding
    val = loader("mnist", "val", 100, limit=100)
    x = next(iter(loader("mnist", "train", 32, holdout=5000)))[0]
    sens = measure_sensitivity(model, val, x, bits=(8, 4, 2), sparsities=(0.8, 0.95), channels=())
    budget = Budget(max_bytes=4_000 if finetune else 12_000, threads=1, finetune=finetune)
    probed = []

    def probe(stages):
        probed.append(zero_shot(model, stages, budget, calibration=x, latency=False))
        return probed[-1]

    # a tiny learning rate: the fine-tunes run but barely move the weights of this untrained
    # model, so the zero-shot size holds (on trained models the 3 % margin covers the drift)
    (cand,) = sensitivity_candidates(budget, Measurement(), sens, probe=probe, lr=1e-6)
    assert cand.name == ("prune-share-sens" if finetune else "share-sens")
    save_checkpoint(model, tmp_path / "m.safetensors")
    recipe = parse_recipe(
        {"model": {"checkpoint": "m.safetensors"},
         "data": {"name": "mnist", "batch_size": 32, "limit": 100, "train_limit": 32,
                  "eval_split": "val"},
         "measure": {"latency": False, "threads": 1}, "stages": [dict(s) for s in cand.stages]},
        base_dir=tmp_path,
    )  # fmt: skip
    run_recipe(recipe, tmp_path / "run", progress=False, log=lambda _l: None)
    size = (tmp_path / "run" / "model.nns").stat().st_size
    assert size <= budget.max_bytes
    if not finetune:  # no training stage: the run is one of the probes
        assert size in {p.bytes for p in probed}


def test_struct_candidate_prunes_each_layer_as_allocated(tiny_convnet):
    from nnshrink.core import Config
    from nnshrink.metrics import count_macs

    model = tiny_convnet.eval()
    x = torch.randn(8, 1, 8, 8)
    g = torch.Generator().manual_seed(2)
    val = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))]
    sens = measure_sensitivity(model, val, x, bits=(), sparsities=(), channels=(0.25, 0.5, 0.75))
    assert {r.name for r in sens.layers if r.channels} == {"conv1", "conv2"}
    budget = Budget(max_macs=sens.macs // 2, threads=1)

    def probe(stages):
        return zero_shot(model, stages, budget, calibration=x, latency=False)

    (cand,) = sensitivity_candidates(budget, Measurement(macs=sens.macs), sens, probe=probe,
                                     keep_fraction=0.5)  # fmt: skip
    assert cand.name == "struct-sens-ft" and next(iter(cand.stages[1])) == "finetune"
    prune = cand.stages[0]["prune"]
    assert list(prune["per_layer"]) == ["conv1", "conv2", "fc"]  # every layer, producers first
    trial = copy.deepcopy(model)
    compress_(trial, Config.from_dict(prune), example_inputs=x)
    for name, ratio in zip(("conv1", "conv2"), prune["per_layer"].values()):
        before = getattr(model, name).out_channels
        assert getattr(trial, name).out_channels == before - int(round(ratio * before)), name
    assert count_macs(trial, (torch.zeros(1, 1, 8, 8),)) <= budget.max_macs


def test_lowrank_candidate_factorises_each_layer_as_allocated(tiny_convnet):
    from nnshrink.core import Config
    from nnshrink.metrics import count_macs
    from nnshrink.recipes import parse_recipe

    torch.manual_seed(0)
    model = tiny_convnet.eval()
    x = torch.randn(8, 1, 8, 8)
    g = torch.Generator().manual_seed(3)
    val = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g))]
    sens = measure_sensitivity(model, val, x, bits=(), sparsities=(), channels=(),
                               ranks=(0.7, 0.5, 0.35))  # fmt: skip
    rows = {r.name: r for r in sens.layers}
    # conv1 has one input channel: Tucker-2 cannot save MACs there at any of these fractions
    assert set(rows["conv2"].rank) == {0.7, 0.5, 0.35} and rows["fc"].rank
    assert all(m < sens.macs for m in rows["conv2"].rank_macs.values())
    budget = Budget(max_macs=int(0.8 * sens.macs), threads=1)

    def probe(stages):
        return zero_shot(model, stages, budget, calibration=x, latency=False)

    cands = sensitivity_candidates(budget, Measurement(macs=sens.macs), sens, probe=probe,
                                   keep_fraction=0.8)  # fmt: skip
    (cand,) = [c for c in cands if c.name == "lowrank-sens-ft"]
    decompose = [s["decompose"] for s in cand.stages if "decompose" in s]
    assert decompose and next(iter(cand.stages[-1])) == "finetune"
    parse_recipe(
        {
            "name": "t",
            "model": {"name": "lenet5"},
            "data": {"name": "mnist"},
            "stages": list(cand.stages),
        }
    )  # fmt: skip  (valid recipe stages)
    trial = copy.deepcopy(model)
    for body in decompose:
        assert body["rank"] == "macs" and body["macs_ratio"] in rows[body["layers"][0]].rank
        compress_(trial, Config.from_dict(body), example_inputs=x)
    assert count_macs(trial, (torch.zeros(1, 1, 8, 8),)) <= budget.max_macs
