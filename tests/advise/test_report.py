"""Report: Pareto front against a brute-force oracle; files written; the recipe parses back."""

from __future__ import annotations

import itertools
import json
import random

import yaml

from nnshrink.advise import AdviceResult, Budget, Candidate, Evaluation, Measurement, judge
from nnshrink.advise.measure import LayerTime
from nnshrink.advise.report import pareto_indices, render_markdown, write_report
from nnshrink.io import save_checkpoint
from nnshrink.models import create
from nnshrink.recipes import load_recipe


def _brute_front(ms):
    def key(m):
        return (-m.score, m.bytes, m.latency_ms)

    def dom(a, b):
        return all(x <= y for x, y in zip(a, b)) and a != b

    return [i for i, m in enumerate(ms)
            if not any(dom(key(o), key(m)) for j, o in enumerate(ms) if j != i)]  # fmt: skip


def test_pareto_front_matches_brute_force():
    rng = random.Random(0)
    for _ in range(20):
        ms = [Measurement(score=rng.choice([0.9, 0.95, 0.97]), bytes=rng.choice([10, 20, 30]),
                          latency_ms=rng.choice([1.0, 2.0])) for _ in range(8)]  # fmt: skip
        assert pareto_indices(ms) == _brute_front(ms)
    # a missing latency counts as the worst
    ms = [Measurement(score=0.9, bytes=10, latency_ms=None), Measurement(score=0.9, bytes=10,
                                                                        latency_ms=1.0)]  # fmt: skip
    assert pareto_indices(ms) == [1]


def _result(tmp_path, meets: bool) -> AdviceResult:
    save_checkpoint(create("lenet300"), tmp_path / "baseline.safetensors")
    budget = Budget(max_bytes=100 if meets else 10, max_drop=0.01)
    base = Measurement(score=0.98, bytes=1000, latency_ms=1.0, macs=100)
    cand = Candidate("share4", "share", ({"share": {"type": "weight-sharing", "bits": 4}},
                                         {"encode": {}}))  # fmt: skip
    evals = []
    for i, size in enumerate((90, 60)):
        m = Measurement(score=0.975 - 0.01 * i, bytes=size, bytes_kind="nns", latency_ms=0.5,
                        macs=100)  # fmt: skip
        recipe = {"name": "x", "model": {"checkpoint": "baseline.safetensors"},
                  "data": {"name": "mnist"}, "seed": 0, "measure": {"latency": False},
                  "stages": [dict(s) for s in cand.stages]}  # fmt: skip
        evals.append(Evaluation(cand, i, 100, m, seconds=1.0, recipe=recipe,
                                **judge(budget, m, base.score)))  # fmt: skip
    evals.append(Evaluation(cand, 2, 100, None, seconds=0.1, error="ValueError: boom",
                            **judge(budget, None, base.score)))  # fmt: skip
    from nnshrink.advise import choose

    chosen, closest = choose(evals)
    return AdviceResult(budget, base, chosen, closest, evals, [],
                        [LayerTime("0", "Linear", 0.1, 0.5)], tmp_path,
                        settings={"rungs": [100], "seed": 0})  # fmt: skip


def test_write_report_with_a_choice(tmp_path):
    res = _result(tmp_path, meets=True)
    write_report(res)
    assert res.chosen.rung == 0 and res.recipe_path == tmp_path / "recipe.yaml"
    recipe = load_recipe(res.recipe_path)
    assert recipe.measure["latency"] is True and [s.name for s in recipe.stages] == ["share",
                                                                                    "encode"]  # fmt: skip
    assert yaml.safe_load(res.recipe_path.read_text())["stages"] == res.chosen.recipe["stages"]
    md = res.report_md.read_text()
    assert "chosen: share4@r0" in md and "**chosen**" in md and "failed: ValueError: boom" in md
    data = json.loads(res.report_json.read_text())
    assert data["chosen"]["label"] == "share4@r0" and set(data["pareto"]) == {"share4@r0",
                                                                            "share4@r1"}  # fmt: skip
    assert res.plot.is_file() and "environment" in data


def test_write_report_without_a_choice(tmp_path):
    res = _result(tmp_path, meets=False)
    write_report(res)
    assert res.chosen is None and res.recipe_path is None
    assert not (tmp_path / "recipe.yaml").exists() and (tmp_path / "closest-recipe.yaml").exists()
    md = render_markdown(res)
    assert "no candidate meets the budget; closest: share4@r1" in md
    assert "(violates the budget)" in (tmp_path / "closest-recipe.yaml").read_text()


def test_dominance_is_consistent():
    ms = [Measurement(score=t, bytes=b, latency_ms=1.0)
          for t, b in itertools.product((0.9, 0.95), (10, 20))]  # fmt: skip
    assert pareto_indices(ms) == [2]  # 0.95 at 10 bytes dominates the rest
