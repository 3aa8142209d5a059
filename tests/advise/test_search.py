"""Successive halving with a fake evaluator and a fake clock: rung sizes, promotion, time limit."""

from __future__ import annotations

import math

import pytest

from nnshrink.advise import Budget, Candidate, Evaluation, Measurement, choose, judge, rung_limits
from nnshrink.advise.search import split_resource, successive_halving

BUDGET = Budget(max_bytes=100, max_drop=0.01)  # one point of top-1
BASE_TOP1 = 0.99
FT = ({"finetune": {"epochs": 1}},)


class Fake:
    """Evaluates a candidate from a table; each call advances a fake clock by its cost."""

    def __init__(self, table, cost=1.0):
        self.table, self.cost, self.now, self.calls = table, cost, 0.0, []

    def clock(self):
        return self.now

    def __call__(self, cand, rung, limit):
        self.calls.append((cand.name, rung, limit))
        self.now += self.cost * (limit or 1) / 100
        top1, size = self.table[cand.name]
        top1 += 0.001 * rung  # longer fine-tunes help a little
        m = Measurement(score=top1, bytes=size)
        return Evaluation(cand, rung, limit, m, seconds=self.cost * (limit or 1) / 100,
                          **judge(BUDGET, m, BASE_TOP1))  # fmt: skip


def _cands(n, stages=FT):
    return [Candidate(f"c{i}", "f", stages) for i in range(n)]


def test_rungs_keep_a_third_and_only_resource_feasible_candidates():
    table = {f"c{i}": (0.98 + 0.001 * i, 50) for i in range(9)}
    table["c8"] = (0.999, 500)  # most accurate but too big: never promoted
    fake = Fake(table)
    evals = successive_halving(_cands(9), fake, limits=[100, 300, 900], eta=3,
                               time_limit_s=1e9, progress=False, clock=fake.clock)  # fmt: skip
    per_rung = [[c for c, r, _ in fake.calls if r == k] for k in range(3)]
    assert [len(r) for r in per_rung] == [9, 3, 1]
    assert per_rung[1] == ["c7", "c6", "c5"] and per_rung[2] == ["c7"]
    assert [lim for _, r, lim in fake.calls if r == 2] == [900]
    chosen, closest = choose(evals)
    assert closest is None and chosen.candidate.name == "c7" and chosen.rung == 2


def test_time_limit_stops_the_search_but_never_before_one_run():
    fake = Fake({f"c{i}": (0.99, 50) for i in range(6)}, cost=10.0)
    evals = successive_halving(_cands(6), fake, limits=[100, 300], eta=3, time_limit_s=25,
                               progress=False, clock=fake.clock)  # fmt: skip
    # each run costs 10 s: the third would end at 30 > 25
    assert len(evals) == 2 and fake.now <= 25
    fake = Fake({"c0": (0.99, 50)}, cost=100.0)
    assert len(successive_halving(_cands(1), fake, limits=[100], time_limit_s=1,
                                  progress=False, clock=fake.clock)) == 1  # fmt: skip


def test_candidates_without_training_are_not_rerun():
    fake = Fake({"c0": (0.99, 50), "c1": (0.98, 50)})
    cands = _cands(1, stages=({"quantize": {"type": "ptq"}},)) + [Candidate("c1", "f", FT)]
    successive_halving(cands, fake, limits=[100, 300], eta=2, time_limit_s=1e9,
                       progress=False, clock=fake.clock)  # fmt: skip
    assert fake.calls == [("c0", 0, 100), ("c1", 0, 100), ("c1", 1, 300)]


def test_choose_never_returns_a_violating_candidate():
    table = {"c0": (0.5, 50), "c1": (0.99, 150), "c2": (0.99, 400)}
    fake = Fake(table)
    evals = [fake(c, 0, 100) for c in _cands(3)]
    chosen, closest = choose(evals)
    assert chosen is None and closest.candidate.name == "c1"  # 50 % over vs 49 pt drop
    assert closest.excess == pytest.approx(0.5)
    assert choose([]) == (None, None)


def test_judge_and_rung_limits():
    fields = judge(Budget(max_latency_ms=1.0), Measurement(latency_ms=1.05), None)
    assert not fields["meets"] and fields["resource_ok"]  # 10 % latency slack for promotion
    failed = judge(BUDGET, None, BASE_TOP1)
    assert failed["violations"] == ["run failed"] and math.isinf(failed["excess"])
    assert rung_limits(60000, 3, 3) == [6666, 20000, 60000]
    assert rung_limits(500, 3, 3) == [256, 500]
    assert rung_limits(1000, 1, 3) == [1000]
    assert rung_limits(1000, 2, 3, extra=2) == [333, 1000, 3000, 9000]
    assert split_resource(333, 1000) == (333, 1) and split_resource(9000, 1000) == (1000, 9)
    assert split_resource(None, 1000) == (None, 1)


def test_extra_rungs_keep_training_the_best_while_time_is_left():
    fake = Fake({f"c{i}": (0.98 + 0.001 * i, 50) for i in range(3)})
    successive_halving(_cands(3), fake, limits=[100, 300, 900, 2700], eta=3, time_limit_s=1e9,
                       progress=False, clock=fake.clock)  # fmt: skip
    assert [(c, r) for c, r, _ in fake.calls if r >= 1] == [("c2", 1), ("c2", 2), ("c2", 3)]
    # with a budget that covers rungs 0-1 and not the 9x-cost rung 2, the search stops
    fake = Fake({f"c{i}": (0.98 + 0.001 * i, 50) for i in range(3)})
    successive_halving(_cands(3), fake, limits=[100, 300, 900, 2700], eta=3, time_limit_s=10,
                       progress=False, clock=fake.clock)  # fmt: skip
    assert max(r for _, r, _ in fake.calls) == 1 and fake.now <= 10


def test_a_lower_is_better_metric_promotes_and_chooses_the_lowest():
    budget = Budget(max_bytes=100, max_drop=0.05)
    errors = {"c0": 0.12, "c1": 0.03, "c2": 0.07}

    def evaluate(cand, rung, limit):
        m = Measurement(score=errors[cand.name] - 0.001 * rung, bytes=50)
        return Evaluation(cand, rung, limit, m, seconds=0.0,
                          **judge(budget, m, 0.05, higher_is_better=False))  # fmt: skip

    evals = successive_halving(_cands(3), evaluate, limits=[100, 300], eta=3, time_limit_s=1e9,
                               progress=False, higher_is_better=False)  # fmt: skip
    assert [e.candidate.name for e in evals if e.rung == 1] == ["c1"]  # the lowest error
    chosen, _ = choose(evals, higher_is_better=False)
    assert chosen.candidate.name == "c1" and chosen.rung == 1
    assert not next(e for e in evals if e.candidate.name == "c0").meets  # 0.12 - 0.05 > 0.05
