"""Budget-aware successive halving over candidate pipelines.

Rung 0 runs every candidate with a short fine-tune (a small slice of the training data); each
later rung keeps the best ``1/eta`` of the candidates whose bytes/latency/MACs fit and runs them
again with ``eta`` times more data. Before each run the search estimates its cost from the runs
already done and stops when the next one would not finish within the time limit. Pipelines
without a training stage are not re-run (more data cannot change them).

The policy is independent of how a candidate is evaluated: :func:`successive_halving` takes an
``evaluate(candidate, rung, train_limit)`` function.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from .budget import Budget, Measurement, excess, goodness, resource_ok, violations
from .candidates import Candidate


@dataclasses.dataclass
class Evaluation:
    """One candidate run at one rung, measured.

    Attributes:
        candidate: the pipeline.
        rung: rung index (0 = shortest fine-tune).
        train_limit: training samples its recovery stages used (``None``: all).
        measurement: the measured artifact (``None`` if the run failed).
        violations: broken limits, as text.
        meets: whether every limit holds.
        seconds: wall time of the run and its measurement.
        out_dir: the run folder.
        recipe: the recipe (dict) that produced it.
        artifact: the file whose size is ``measurement.bytes``.
        error: why the run failed, if it did.
        test_score: the metric on the test data, measured once after the choice for the chosen
            and the closest candidate (``None`` for the others); ``measurement.score`` is on
            the selection data (validation, or a held-back part of the training data).
        retimed_ratio: for the final choice of a latency budget, its latency over the
            baseline's when the two were re-timed side by side after the search (``None``
            otherwise); ``measurement.latency_ms`` is then that ratio times the baseline's.
    """

    candidate: Candidate
    rung: int
    train_limit: int | None
    measurement: Measurement | None
    violations: list[str]
    meets: bool
    seconds: float
    out_dir: str | None = None
    recipe: dict[str, Any] | None = None
    artifact: str | None = None
    error: str | None = None
    excess: float = math.inf
    resource_ok: bool = False
    test_score: float | None = None
    retimed_ratio: float | None = None

    @property
    def label(self) -> str:
        """``name@rung``."""
        return f"{self.candidate.name}@r{self.rung}"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return {
            "label": self.label, "candidate": self.candidate.to_dict(), "rung": self.rung,
            "train_limit": self.train_limit,
            "measurement": self.measurement.to_dict() if self.measurement else None,
            "violations": self.violations, "meets": self.meets, "seconds": self.seconds,
            "out_dir": self.out_dir, "artifact": self.artifact, "error": self.error,
            "recipe": self.recipe,
            "excess": None if math.isinf(self.excess) else self.excess,
            "resource_ok": self.resource_ok, "test_score": self.test_score,
            "retimed_ratio": self.retimed_ratio,
        }  # fmt: skip


def judge(
    budget: Budget,
    measurement: Measurement | None,
    baseline_score: float | None,
    higher_is_better: bool = True,
    latency_slack: float = 0.1,
) -> dict[str, Any]:
    """Fields of an :class:`Evaluation` that follow from a measurement: violations, meets, ...

    ``resource_ok`` allows ``latency_slack`` (relative) on latency only, because latency is noisy
    and a near miss at a short rung may still be promoted; ``meets`` is strict.

    Example:
        >>> judge(Budget(max_bytes=10, max_drop=0.1), Measurement(score=0.5, bytes=9), 0.4,
        ...       higher_is_better=False)["violations"]
        []
    """
    if measurement is None:
        return {"violations": ["run failed"], "meets": False, "excess": math.inf,
                "resource_ok": False}  # fmt: skip
    broken = violations(budget, measurement, baseline_score, higher_is_better)
    relaxed = dataclasses.replace(
        budget, max_latency_ms=None if budget.max_latency_ms is None
        else budget.max_latency_ms * (1 + latency_slack),
    )  # fmt: skip
    return {
        "violations": [str(v) for v in broken],
        "meets": not broken,
        "excess": excess(budget, measurement, baseline_score, higher_is_better),
        "resource_ok": resource_ok(relaxed, measurement),
    }


def rung_limits(
    train_size: int, rungs: int, eta: int, minimum: int = 256, extra: int = 0
) -> list[int]:
    """Training samples per rung: ``train_size / eta**k`` for the last ``k = rungs-1 .. 0``,
    then ``extra`` rungs of ``train_size * eta**k`` (``k = 1 .. extra``): past the whole data set
    the resource is epochs (see :func:`split_resource`), used only while time is left.

    Example:
        >>> rung_limits(60000, 3, 3), rung_limits(1000, 1, 3, extra=2)
        ([6666, 20000, 60000], [1000, 3000, 9000])
    """
    limits = [max(minimum, train_size // eta ** (rungs - 1 - r)) for r in range(rungs)]
    base = sorted({min(limit, train_size) for limit in limits})
    return base + [train_size * eta**k for k in range(1, extra + 1)]


def split_resource(samples: int | None, train_size: int) -> tuple[int | None, int]:
    """``(train_limit, epochs multiplier)`` for a rung's resource of ``samples`` per stage.

    Example:
        >>> split_resource(20000, 60000), split_resource(180000, 60000)
        ((20000, 1), (60000, 3))
    """
    if samples is None or samples <= train_size:
        return samples, 1
    return train_size, max(1, round(samples / train_size))


def choose(
    evaluations: Sequence[Evaluation], higher_is_better: bool = True
) -> tuple[Evaluation | None, Evaluation | None]:
    """``(chosen, closest)``: the best-scoring evaluation that meets the budget (ties: the later
    rung, then fewer bytes), and, when none does, the one with the smallest total excess."""
    ok = [e for e in evaluations if e.meets and e.measurement is not None]
    if ok:
        best = max(ok, key=lambda e: (goodness(e.measurement.score, higher_is_better), e.rung,
                                      -(e.measurement.bytes or 0)))  # fmt: skip
        return best, None
    measured = [e for e in evaluations if e.measurement is not None]
    if not measured:
        return None, None
    return None, min(measured, key=lambda e: (e.excess,
                                              -goodness(e.measurement.score, higher_is_better)))  # fmt: skip


def successive_halving(
    candidates: Sequence[Candidate],
    evaluate: Callable[[Candidate, int, int | None], Evaluation],
    *,
    limits: Sequence[int | None],
    eta: int = 3,
    time_limit_s: float,
    start: float | None = None,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    higher_is_better: bool = True,
) -> list[Evaluation]:
    """Run the search; returns every evaluation in the order it was made.

    Args:
        candidates: in priority order (the first are tried first when time is short).
        evaluate: runs one candidate at ``(rung, train_limit)`` and returns its evaluation.
        limits: training samples per rung (see :func:`rung_limits`).
        eta: keep ``ceil(n / eta)`` candidates per rung.
        time_limit_s: wall-clock budget, counted from ``start``.
        start: ``clock()`` value the budget started at (default: now).
        progress: show a progress bar per rung.
        clock: time source (seconds).
        higher_is_better: the metric's direction (the best ``1/eta`` go on).

    Example:
        >>> evals = successive_halving(cands, fn, limits=[1000, 3000], time_limit_s=60)  # doctest: +SKIP
    """
    start = clock() if start is None else start
    deadline = start + time_limit_s
    done: list[Evaluation] = []
    alive = list(candidates)
    previous_mean: float | None = None
    for rung, limit in enumerate(limits):
        if not alive:
            break
        this_rung: list[Evaluation] = []
        with _bar(progress, f"rung {rung} ({limit or 'all'} samples)", len(alive)) as advance:
            for candidate in alive:
                times = [e.seconds for e in this_rung]
                estimate = sum(times) / len(times) if times else (previous_mean or 0.0)
                if done and clock() + estimate > deadline:
                    break
                evaluation = evaluate(candidate, rung, limit)
                this_rung.append(evaluation)
                done.append(evaluation)
                advance()
        trained = [e for e in this_rung if e.candidate.trains]
        if trained and rung + 1 < len(limits):
            # the next rung trains on more data: scale this rung's mean run time by the ratio
            ratio = (limits[rung + 1] or 1) / (limit or 1)
            previous_mean = ratio * sum(e.seconds for e in trained) / len(trained)
        pool = [e for e in this_rung if e.resource_ok and e.candidate.trains and not e.error]
        pool.sort(key=lambda e: -goodness(e.measurement.score, higher_is_better))
        alive = [e.candidate for e in pool[: math.ceil(len(pool) / eta)]]
        if clock() >= deadline:
            break
    return done


class _bar:
    """A rich progress bar (or nothing) used as ``with _bar(...) as advance: advance()``."""

    def __init__(self, enabled: bool, title: str, total: int) -> None:
        self.enabled, self.title, self.total = enabled, title, total
        self.progress = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self.progress = Progress(transient=False)
        self.progress.start()
        task = self.progress.add_task(self.title, total=self.total)
        return lambda: self.progress.advance(task)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
