"""What the compressed model must satisfy (a :class:`Budget`) and what a model measured.

The checks are pure functions of a :class:`Budget`, a :class:`Measurement` and the baseline
top-1: :func:`violations` lists every limit a measurement breaks, :func:`meets` says whether there
are none, :func:`excess` says how far over budget it is (to show the closest candidate when none
fits).
"""

from __future__ import annotations

import dataclasses
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
        max_drop: allowed top-1 drop against the baseline, in accuracy points (0.5 = half a point).
        time_limit_s: wall-clock budget of the search.
        finetune: whether training data may be used to recover accuracy (``False``: data-free
            methods only: PTQ, SVD/Tucker and k-means without fine-tuning).

    Example:
        >>> Budget(max_bytes=parse_size("20KB"), max_drop=0.3).max_bytes
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
            raise BudgetError(f"budget.max_drop must be >= 0 points, got {self.max_drop!r}")
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


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One model, measured: what a :class:`Budget` is checked against.

    Args:
        top1: top-1 accuracy as a fraction.
        bytes: size of the artifact in bytes.
        bytes_kind: what ``bytes`` counts: ``"nns"``, ``"int8-onnx"`` or ``"checkpoint"``.
        latency_ms: median latency (at the budget's batch, threads and runtime).
        macs: multiply-accumulates per sample.
    """

    top1: float | None = None
    bytes: int | None = None
    bytes_kind: str = "checkpoint"
    latency_ms: float | None = None
    macs: int | None = None

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


def drop_points(baseline_top1: float | None, top1: float | None) -> float | None:
    """Top-1 drop in accuracy points (positive = worse than the baseline)."""
    if baseline_top1 is None or top1 is None:
        return None
    return 100.0 * (baseline_top1 - top1)


def violations(
    budget: Budget, measurement: Measurement, baseline_top1: float | None = None
) -> list[Violation]:
    """Every limit of ``budget`` that ``measurement`` breaks; a missing value breaks its limit.

    ``excess`` is relative for resources (0.1 = 10 % over) and, for accuracy, the extra drop
    divided by ``max(max_drop, 0.5)`` points, so the two can be added to rank near misses.

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
        drop = drop_points(baseline_top1, measurement.top1)
        if drop is None:
            out.append(Violation("drop_points", None, budget.max_drop, float("inf")))
        elif drop > budget.max_drop + 1e-9:
            scale = max(budget.max_drop, 0.5)
            out.append(Violation("drop_points", drop, budget.max_drop,
                                 (drop - budget.max_drop) / scale))  # fmt: skip
    return out


def meets(budget: Budget, measurement: Measurement, baseline_top1: float | None = None) -> bool:
    """Whether ``measurement`` satisfies every limit of ``budget``.

    Example:
        >>> meets(Budget(max_macs=10, max_drop=1.0), Measurement(top1=0.98, macs=9), 0.985)
        True
    """
    return not violations(budget, measurement, baseline_top1)


def excess(budget: Budget, measurement: Measurement, baseline_top1: float | None = None) -> float:
    """Sum of the relative excesses (0 when the budget is met): smaller is closer."""
    return sum(v.excess for v in violations(budget, measurement, baseline_top1))


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
