"""What the compressed model must satisfy (a :class:`Budget`) and what a model measured.

The checks are pure functions of a :class:`Budget`, a :class:`Measurement`, the baseline's score
and the metric's direction: :func:`violations` lists every limit a measurement breaks,
:func:`meets` says whether there are none, :func:`excess` says how far over budget it is (to show
the closest candidate when none fits).

The score is the headline value of the task's metric (top-1 as a fraction by default, or the
user's metric: an error rate, a loss, a perplexity). ``max_drop`` is in that metric's own units
and its direction decides the sign (:func:`metric_drop`, the same rule as
:meth:`nnshrink.train.task.Task.drop`): for top-1, 0.005 is half a point; for a loss where lower
is better, 0.02 allows the loss to rise by 0.02.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Literal

Runtime = Literal["eager", "onnxruntime"]
RUNTIMES = ("eager", "onnxruntime")
RESOURCE_KEYS = ("bytes", "latency_ms", "macs")


class BudgetError(ValueError):
    """A budget value is out of range or no limit was given."""


@dataclasses.dataclass(frozen=True)
class Budget:
    """Limits for the compressed model and for the search itself.

    Args:
        max_bytes: size of the deployable artifact (the ``.nns`` file, the int8 ONNX file or the
            checkpoint), in bytes.
        max_latency_ms: median latency at ``batch_size`` / ``threads`` in ``runtime``.
        batch_size: batch size of the latency measurement.
        threads: intra-op threads of the latency measurement.
        runtime: ``"eager"`` (PyTorch) or ``"onnxruntime"``.
        max_macs: multiply-accumulates per sample.
        max_drop: allowed drop of the metric's headline against the baseline, in the metric's
            own units, signed by its direction (top-1 is a fraction: 0.005 = half a point).
        time_limit_s: wall-clock budget of the search.
        finetune: whether training data may be used to recover accuracy (``False``: data-free
            methods only: PTQ, SVD/Tucker and k-means without fine-tuning).

    Example:
        >>> Budget(max_bytes=parse_size("20KB"), max_drop=0.003).max_bytes
        20000
    """

    max_bytes: int | None = None
    max_latency_ms: float | None = None
    batch_size: int = 1
    threads: int = 1
    runtime: Runtime = "onnxruntime"
    max_macs: int | None = None
    max_drop: float | None = None
    time_limit_s: float = 600.0
    finetune: bool = True

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_latency_ms", "max_macs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise BudgetError(f"budget.{name} must be > 0, got {value!r}")
        if self.max_drop is not None and self.max_drop < 0:
            raise BudgetError(
                f"budget.max_drop must be >= 0 (in the metric's own units), got {self.max_drop!r}"
            )
        if self.batch_size < 1 or self.threads < 1:
            raise BudgetError("budget.batch_size and budget.threads must be >= 1")
        if self.runtime not in RUNTIMES:
            raise BudgetError(f"budget.runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if not self.time_limit_s > 0:
            raise BudgetError(f"budget.time_limit_s must be > 0, got {self.time_limit_s!r}")

    @property
    def resource_limits(self) -> dict[str, float]:
        """``{measurement key: limit}`` for the resource limits that are set."""
        limits = {"bytes": self.max_bytes, "latency_ms": self.max_latency_ms,
                  "macs": self.max_macs}  # fmt: skip
        return {k: v for k, v in limits.items() if v is not None}

    def require_limit(self) -> None:
        """Raise :class:`BudgetError` unless at least one resource limit is set."""
        if not self.resource_limits:
            raise BudgetError(
                "give at least one of max_bytes, max_latency_ms or max_macs "
                "(--max-bytes, --max-latency-ms, --max-macs): advice needs something to shrink"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Budget:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BudgetError(f"budget: unknown key(s) {unknown}; allowed: {sorted(names)}")
        return cls(**data)

    def check_drop_units(self, headline: str) -> None:
        """Refuse a ``max_drop`` that can never bind a fraction metric (``top1``, ``top5``):
        such a drop is at most 1, so ``max_drop >= 1`` is the old "points" spelling.

        Example:
            >>> Budget(max_bytes=1, max_drop=0.5).check_drop_units("top1")
        """
        if self.max_drop is not None and headline in FRACTION_METRICS and self.max_drop >= 1:
            raise BudgetError(
                f"max_drop is in the metric's own units and {headline} is a fraction: "
                f"{self.max_drop:g} can never bind; for {self.max_drop:g} points of {headline} "
                f"give {self.max_drop / 100:g} (--max-drop {self.max_drop / 100:g})"
            )


FRACTION_METRICS = ("top1", "top5")


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One model, measured: what a :class:`Budget` is checked against.

    Args:
        score: the metric's headline value on the selection data (top-1 as a fraction by
            default).
        bytes: size of the artifact in bytes.
        bytes_kind: what ``bytes`` counts: ``"nns"``, ``"int8-onnx"`` or ``"checkpoint"``.
        latency_ms: median latency (at the budget's batch, threads and runtime).
        macs: multiply-accumulates per sample.
    """

    score: float | None = None
    bytes: int | None = None
    bytes_kind: str = "checkpoint"
    latency_ms: float | None = None
    macs: int | None = None

    @property
    def top1(self) -> float | None:
        """Deprecated: the headline score (``score``), whatever the metric."""
        from .._deprecated import warn

        warn("Measurement.top1", "Measurement.score (the metric's headline value)")
        return self.score

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Violation:
    """One broken limit: ``value`` is over ``limit`` (or missing) by ``excess`` (relative)."""

    key: str
    value: float | None
    limit: float
    excess: float

    def __str__(self) -> str:
        if self.value is None:
            return f"{self.key} not measured (limit {self.limit:g})"
        return f"{self.key} {_num(self.value)} > {_num(self.limit)}"


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def metric_drop(
    baseline: float | None, value: float | None, higher_is_better: bool = True
) -> float | None:
    """How much worse ``value`` is than ``baseline``, in the metric's units (positive = worse).

    Example:
        >>> round(metric_drop(0.98, 0.97), 6), round(metric_drop(0.1, 0.12, False), 6)
        (0.01, 0.02)
    """
    if baseline is None or value is None:
        return None
    return (baseline - value if higher_is_better else value - baseline) + 0.0  # never -0.0


def goodness(value: float | None, higher_is_better: bool = True) -> float:
    """A sort key where larger is better whatever the direction (a missing value is worst).

    Example:
        >>> sorted([0.3, 0.1, None], key=lambda v: -goodness(v, higher_is_better=False))
        [0.1, 0.3, None]
    """
    if value is None:
        return -math.inf
    return value if higher_is_better else -value


def drop_points(baseline_top1: float | None, top1: float | None) -> float | None:
    """Deprecated: top-1 drop in accuracy points; use :func:`metric_drop` (metric units)."""
    from .._deprecated import warn

    warn("nnshrink.advise.drop_points", "nnshrink.advise.metric_drop (the metric's own units)")
    drop = metric_drop(baseline_top1, top1)
    return None if drop is None else 100.0 * drop


def violations(
    budget: Budget,
    measurement: Measurement,
    baseline_score: float | None = None,
    higher_is_better: bool = True,
) -> list[Violation]:
    """Every limit of ``budget`` that ``measurement`` breaks; a missing value breaks its limit.

    ``excess`` is relative for resources (0.1 = 10 % over) and, for the metric, the extra drop
    divided by ``max(max_drop, 0.5 % of the baseline's magnitude)``, so the two can be added to
    rank near misses.

    Example:
        >>> violations(Budget(max_bytes=100), Measurement(bytes=150))[0].excess
        0.5
    """
    out = []
    for key, limit in budget.resource_limits.items():
        value = getattr(measurement, key)
        if value is None:
            out.append(Violation(key, None, limit, float("inf")))
        elif value > limit:
            out.append(Violation(key, value, limit, (value - limit) / limit))
    if budget.max_drop is not None:
        drop = metric_drop(baseline_score, measurement.score, higher_is_better)
        if drop is None:
            out.append(Violation("drop", None, budget.max_drop, float("inf")))
        elif drop > budget.max_drop + 1e-12:
            scale = max(budget.max_drop, 0.005 * abs(baseline_score or 0.0), 1e-12)
            out.append(Violation("drop", drop, budget.max_drop,
                                 (drop - budget.max_drop) / scale))  # fmt: skip
    return out


def meets(
    budget: Budget,
    measurement: Measurement,
    baseline_score: float | None = None,
    higher_is_better: bool = True,
) -> bool:
    """Whether ``measurement`` satisfies every limit of ``budget``.

    Example:
        >>> meets(Budget(max_macs=10, max_drop=0.01), Measurement(score=0.98, macs=9), 0.985)
        True
    """
    return not violations(budget, measurement, baseline_score, higher_is_better)


def excess(
    budget: Budget,
    measurement: Measurement,
    baseline_score: float | None = None,
    higher_is_better: bool = True,
) -> float:
    """Sum of the relative excesses (0 when the budget is met): smaller is closer."""
    return sum(v.excess for v in violations(budget, measurement, baseline_score, higher_is_better))


def resource_ok(budget: Budget, measurement: Measurement, slack: float = 0.0) -> bool:
    """Whether bytes/latency/MACs are within the limits (times ``1 + slack``); accuracy ignored.

    Resources are fixed by a candidate's structure, so a longer fine-tune cannot repair them;
    the search promotes only candidates that pass this.
    """
    for key, limit in budget.resource_limits.items():
        value = getattr(measurement, key)
        if value is None or value > limit * (1.0 + slack):
            return False
    return True


_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "ki": 1024, "kib": 1024, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30}  # fmt: skip


def parse_size(text: str | int) -> int:
    """Bytes from ``"20KB"``, ``"1.5MB"``, ``"64KiB"`` or a plain number (KB = 1000 bytes).

    Example:
        >>> parse_size("1.5MB"), parse_size("2KiB"), parse_size(300)
        (1500000, 2048, 300)
    """
    if isinstance(text, int):
        return text
    match = _SIZE.match(str(text))
    if not match or (match.group(2) or "").lower() not in _UNITS:
        raise BudgetError(f"cannot read size {text!r}: use e.g. 20000, 20KB, 1.5MB or 64KiB")
    return int(round(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]))
