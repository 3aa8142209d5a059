"""advise() end to end on a small trained model: the issue's tests.

Oracles: the chosen artifact is loaded back and measured again independently (top-1 on the same
validation slice the search selected on and on the test slice it reports, the file's size, MACs
counted on the loaded model) and compared with the budget by plain comparisons; the emitted recipe is run again with ``run_recipe`` and must give the same
bytes and the same accuracy (within a small tolerance).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnshrink.advise import Budget, advise
from nnshrink.data import loader
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import count_macs
from nnshrink.models import create
from nnshrink.recipes import load_recipe, run_recipe
from nnshrink.storage import load as load_nns
from nnshrink.train import evaluate, fit

from ..conftest import needs_mnist

LIMIT, TRAIN_LIMIT = 300, 512


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = create("lenet300")
    fit(model, loader("mnist", "train", 64, train=True, limit=2048), epochs=1, lr=2e-3,
        optimizer="adam", progress=False)  # fmt: skip
    path = tmp_path_factory.mktemp("advise") / "lenet300.safetensors"
    save_checkpoint(model, path)
    return path


def _top1(model, split="test"):
    return evaluate(model, loader("mnist", split, 1000, limit=LIMIT))["top1"]


@needs_mnist
@pytest.mark.slow
def test_storage_budget_chosen_meets_it_and_recipe_reproduces_it(trained, tmp_path):
    baseline = load_checkpoint(trained)[0]
    baseline_val, baseline_test = _top1(baseline, "val"), _top1(baseline)
    budget = Budget(max_bytes=60_000, max_drop=0.06, time_limit_s=60, threads=1)  # 6 points
    res = advise(trained, "mnist", budget, out_dir=tmp_path / "adv", limit=LIMIT,
                 train_limit=TRAIN_LIMIT, max_candidates=2, rungs=2, extra_rungs=0, progress=False,
                 log=None)  # fmt: skip
    assert res.chosen is not None, res.message
    chosen = res.chosen.measurement
    assert res.chosen.meets and chosen.bytes_kind == "nns"
    # independent re-measurement of the written artifact
    artifact = Path(res.chosen.artifact)
    assert artifact.name == "model.nns" and artifact.parent == Path(res.chosen.out_dir)
    assert artifact.stat().st_size == chosen.bytes <= 60_000
    # selected on the held-back last 5,000 training samples (the drop is judged there),
    # reported on test
    assert res.settings["selection_split"] == "train-holdout"
    assert "last 5,000 training samples" in res.settings["selection"]
    assert res.baseline.score == pytest.approx(baseline_val, abs=1e-9)
    assert res.baseline_test_score == pytest.approx(baseline_test, abs=1e-9)
    val_top1 = _top1(load_nns(artifact), "val")
    assert val_top1 == pytest.approx(chosen.score, abs=1e-9)
    assert baseline_val - val_top1 <= 0.06  # max_drop is in top-1's own units: a fraction
    assert _top1(load_nns(artifact)) == pytest.approx(res.chosen.test_score, abs=1e-9)
    assert res.chosen.test_score != chosen.score  # two different slices of data
    assert all(e.recipe["data"]["eval_split"] == "val" for e in res.evaluations)
    # the emitted recipe reproduces it (bit for bit at one thread: with more intra-op threads
    # the k-means centroid fine-tune's scatter-add sums in a varying order)
    recipe = load_recipe(res.recipe_path)
    assert recipe.model["checkpoint"].endswith("baseline.safetensors")
    assert recipe.data["eval_split"] == "val" and recipe.data["val_size"] == 5000
    rerun = run_recipe(recipe, tmp_path / "rerun", progress=False, log=lambda _l: None)
    again = tmp_path / "rerun" / "model.nns"
    assert again.stat().st_size == chosen.bytes
    assert rerun.rows[-1]["top1"] == pytest.approx(chosen.score, abs=0.005)
    for name in ("advice.md", "advice.json", "pareto.png", "recipe.yaml"):
        assert (tmp_path / "adv" / name).is_file()
    md = (tmp_path / "adv" / "advice.md").read_text()
    assert "held-back top1 (selection)" in md and "test top1 (reported)" in md
    assert f"{100 * res.chosen.test_score:.2f}%" in md
    # the per-layer sensitivity was measured (on val) and produced a candidate with per-layer
    # settings, screened with the others; its table is in the report
    assert res.sensitivity is not None
    assert [r.name for r in res.sensitivity.layers] == ["1", "3", "5"]
    sens = [s for s in res.screened if s.candidate.name.endswith("-sens")]
    assert sens and "per_layer" in sens[0].candidate.stages[-3]["share"]
    assert "## Per-layer sensitivity" in md and "| 1 | 235,200 |" in md
    report = json.loads((tmp_path / "adv" / "advice.json").read_text())
    assert report["sensitivity"]["samples"] == LIMIT
    assert report["selection_split"] == "train-holdout"
    assert report["chosen"]["test_score"] == res.chosen.test_score
    assert report["chosen"]["measurement"]["score"] == chosen.score


@needs_mnist
@pytest.mark.slow
def test_macs_budget_without_data_uses_data_free_methods(trained, tmp_path):
    base_macs = count_macs(load_checkpoint(trained)[0], (torch.zeros(1, 1, 28, 28),))
    budget = Budget(max_macs=int(0.6 * base_macs), time_limit_s=30, finetune=False, threads=1)
    res = advise(trained, "mnist", budget, out_dir=tmp_path / "adv", limit=LIMIT,
                 max_candidates=2, sensitivity=False, progress=False, log=None)  # fmt: skip
    assert res.sensitivity is None and res.settings["sensitivity"] == "off"
    assert res.chosen is not None, res.message
    assert all(not e.candidate.trains for e in res.evaluations)
    model, _ = load_checkpoint(res.chosen.artifact)
    assert count_macs(model, (torch.zeros(1, 1, 28, 28),)) <= 0.6 * base_macs
    assert _top1(model, "val") == pytest.approx(res.chosen.measurement.score, abs=1e-9)
    assert _top1(model) == pytest.approx(res.chosen.test_score, abs=1e-9)


@needs_mnist
def test_impossible_budget_is_reported_not_chosen(trained, tmp_path):
    budget = Budget(max_bytes=10, time_limit_s=20, threads=1)
    res = advise(trained, "mnist", budget, out_dir=tmp_path / "adv", limit=LIMIT,
                 train_limit=TRAIN_LIMIT, max_candidates=1, rungs=1, sensitivity=False,
                 progress=False, log=None)  # fmt: skip
    assert res.chosen is None and res.recipe_path is None
    assert res.closest is not None and not res.closest.meets
    assert res.closest.measurement.bytes > 10
    assert "no candidate meets the budget" in res.message
    assert "no candidate meets the budget" in (tmp_path / "adv" / "advice.md").read_text()
    assert not (tmp_path / "adv" / "recipe.yaml").exists()
    assert (tmp_path / "adv" / "closest-recipe.yaml").is_file()


@needs_mnist
@pytest.mark.parametrize("val_size", [0, -1])
def test_selecting_on_test_or_a_bad_val_size_is_refused_before_any_work(tmp_path, val_size):
    """``val_size=0`` used to select on test; advise never does now (one clear error)."""
    from nnshrink.data import DataError

    with pytest.raises(DataError, match="never selects on test"):
        advise(create("lenet300"), "mnist", Budget(max_bytes=10), out_dir=tmp_path / "a",
               val_size=val_size, progress=False, log=None)  # fmt: skip
    assert not (tmp_path / "a").exists()


@needs_mnist
def test_latency_of_a_structure_is_its_lowest_measurement(trained, tmp_path):
    """Noise only adds time and training does not change the architecture: every rung reports
    at most the candidate's zero-shot latency and at most its own earlier rungs'."""
    budget = Budget(max_latency_ms=10.0, max_drop=0.99, time_limit_s=60, threads=1)
    res = advise(trained, "mnist", budget, out_dir=tmp_path / "adv", limit=LIMIT,
                 train_limit=TRAIN_LIMIT, max_candidates=2, rungs=2, eta=1, sensitivity=False,
                 progress=False, log=None)  # fmt: skip
    zero = {s.candidate.name: s.measurement.latency_ms for s in res.screened if s.measurement}
    seen: dict[str, float] = {}
    runs = [e for e in res.evaluations if e.measurement is not None]
    assert max(e.rung for e in runs) >= 1  # some candidate measured at several rungs
    for e in sorted(runs, key=lambda e: e.rung):
        if e.retimed_ratio is not None:
            continue  # the final check below
        name = e.candidate.name
        assert e.measurement.latency_ms <= zero[name]
        assert e.measurement.latency_ms <= seen.get(name, float("inf"))
        seen[name] = e.measurement.latency_ms
    # the final choice is re-timed beside the baseline: its latency is that ratio x baseline's
    final = res.chosen or res.closest
    assert final.retimed_ratio is not None and final.retimed_ratio > 0
    assert final.measurement.latency_ms == pytest.approx(
        final.retimed_ratio * res.baseline.latency_ms
    )
    assert final in res.evaluations
    assert final.meets == (final.measurement.latency_ms <= budget.max_latency_ms
                           and not final.violations)  # fmt: skip


@needs_mnist
def test_a_choice_that_fails_its_retiming_is_not_chosen(trained, tmp_path, monkeypatch):
    """A re-timing that always fails (10x the limit) leaves nothing chosen."""
    import nnshrink.advise.confirm as confirm

    def slow(evaluation, baseline_model, baseline, budget, shape, say, **_kw):
        import dataclasses

        from nnshrink.advise.search import judge

        m = dataclasses.replace(evaluation.measurement, latency_ms=10 * budget.max_latency_ms)
        return dataclasses.replace(evaluation, measurement=m, retimed_ratio=-1.0,
                                   **judge(budget, m, baseline.score))  # fmt: skip

    monkeypatch.setattr(confirm, "retime", slow)
    budget = Budget(max_latency_ms=10.0, max_drop=0.99, time_limit_s=30, threads=1)
    res = advise(trained, "mnist", budget, out_dir=tmp_path / "adv", limit=LIMIT,
                 train_limit=TRAIN_LIMIT, max_candidates=2, rungs=1, sensitivity=False,
                 progress=False, log=None)  # fmt: skip
    assert res.chosen is None
    assert res.closest is not None and res.closest.retimed_ratio == -1.0
    # every evaluation that met the budget in the search was re-timed (and failed) before the
    # advisor gave up: none meets any more
    assert not any(e.meets for e in res.evaluations)
    assert sum(e.retimed_ratio == -1.0 for e in res.evaluations) >= 1
    assert "no candidate meets the budget" in res.message


def test_a_users_module_loaders_and_metric_in_python(tmp_path):
    """Any nn.Module, plain DataLoaders without val, a lower-is-better metric: the advisor holds
    back part of train to select on, judges the drop in the metric's own units, and names in
    the recipe what it cannot (the Python objects)."""
    from tests.usercode import error_rate, make_data, make_model

    torch.manual_seed(0)
    model = make_model()
    train, test = make_data()
    fit(model, train, epochs=3, lr=1e-2, optimizer="adam", progress=False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.zeros(1, 1, 12, 12)
    base_macs = count_macs(model, (x,))
    budget = Budget(max_macs=int(0.6 * base_macs), max_drop=0.1, time_limit_s=30, threads=1)
    res = advise(model, (train, test), budget, metric=error_rate, out_dir=tmp_path / "adv",
                 max_candidates=2, rungs=1, progress=False, log=None)  # fmt: skip
    for k, v in model.state_dict().items():  # the user's model is never modified
        assert torch.equal(v, state[k])
    assert res.settings["selection_split"] == "train-holdout"
    assert res.headline == "error" and not res.higher_is_better
    assert res.chosen is not None, res.message
    chosen = res.chosen.measurement
    assert chosen.score - res.baseline.score <= 0.1  # lower is better: a drop is a rise
    assert res.baseline_test_score == pytest.approx(error_rate(model.eval(), test)["error"])
    # the chosen model, measured again independently (MACs and the metric on test)
    final = res.model  # no file can rebuild a Python object's architecture: the run's model
    assert count_macs(final, (x,)) == chosen.macs <= budget.max_macs
    assert error_rate(final.eval(), test)["error"] == pytest.approx(res.chosen.test_score)
    text = res.recipe_path.read_text()
    assert "run_recipe" in text and "metric: a Python callable" in text
    md = (tmp_path / "adv" / "advice.md").read_text()
    assert "held-back error (selection)" in md and "lower is better" in md
