"""The advisor's cheap steps before any training: zero-shot screening and the per-layer scan.

:func:`screen` measures every candidate with its technique stages applied and no training, and
keeps those whose structure can meet the budget; :func:`maybe_sensitivity` runs the per-layer
sensitivity scan when its estimated time fits the search's time limit.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .budget import Budget, Measurement, resource_ok
from .candidates import Candidate
from .measure import score_of
from .search import _bar, judge
from .sensitivity import (
    SENS_BITS,
    SENS_CHANNELS,
    SENS_RANKS,
    SENS_SPARSITIES,
    Sensitivity,
    measure_sensitivity,
)


@dataclasses.dataclass
class Screened:
    """A candidate measured zero-shot (technique stages only, no training)."""

    candidate: Candidate
    measurement: Measurement | None
    kept: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return {"candidate": self.candidate.to_dict(), "kept": self.kept, "reason": self.reason,
                "measurement": self.measurement.to_dict() if self.measurement else None}  # fmt: skip


def screen(
    candidates: Sequence[Candidate],
    budget: Budget,
    baseline: Measurement,
    measure: Callable[[Any], Measurement],
    *,
    higher_is_better: bool = True,
    progress: bool = False,
) -> list[Screened]:
    """Zero-shot measurement of every candidate; keep those whose structure fits the budget.

    The bytes of a pruned-and-shared model barely move during its fine-tunes, so they must fit
    with a 3 % margin; latency is noisy and gets 10 % slack; MACs are exact.

    Args:
        candidates: the generated candidates.
        budget: the limits.
        baseline: the baseline's measurement (for the reasons given).
        measure: ``stages -> Measurement`` (zero-shot; may raise for inapplicable pipelines).
        higher_is_better: the metric's direction.
        progress: show a progress bar.

    Example:
        >>> screened = screen(cands, budget, base, measure_zero_shot)  # doctest: +SKIP
    """
    relaxed = dataclasses.replace(
        budget,
        max_bytes=None if budget.max_bytes is None else max(1, int(budget.max_bytes * 0.97)),
        max_latency_ms=None if budget.max_latency_ms is None else budget.max_latency_ms * 1.1,
    )  # fmt: skip
    out = []
    with _bar(progress, "zero-shot screening", len(candidates)) as advance:
        for cand in candidates:
            try:
                m = measure(cand.stages)
            except Exception as exc:  # an inapplicable technique rules the candidate out
                out.append(Screened(cand, None, False, f"{type(exc).__name__}: {exc}"[:300]))
                advance()
                continue
            fits = resource_ok(relaxed, m)
            reason = "" if fits else "; ".join(
                str(v) for v in judge(relaxed, m, baseline.score, higher_is_better)["violations"]
                if not v.startswith("drop")
            )  # fmt: skip
            out.append(Screened(cand, m, fits, reason))
            advance()
    return out


def maybe_sensitivity(
    model: nn.Module,
    budget: Budget,
    batches: Sequence[Any],
    calibration: Any,
    task: Any,
    where: str,
    say: Callable[[str], None],
) -> tuple[Sensitivity | None, str]:
    """The per-layer scans the budget needs, if their estimated time fits; ``(tables, note)``.

    The estimate is one evaluation on ``batches`` x settings x layers; the scans run when it is
    within 20 % of the time limit.

    Args:
        model: the baseline.
        budget: which limits are set decides the scans (bits and sparsity for bytes, channels
            and ranks for MACs / latency; sparsity and channels only with fine-tuning data).
        batches: the screening batches (selection data).
        calibration: an input batch (structured pruning traces with it).
        task: the metric.
        where: what the batches are, for the note.
        say: one-line progress messages.
    """
    storage = budget.max_bytes is not None
    speed = budget.max_macs is not None or budget.max_latency_ms is not None
    scans = {
        "bits": SENS_BITS if storage else (),
        "sparsities": SENS_SPARSITIES if storage and budget.finetune else (),
        "channels": SENS_CHANNELS if speed and budget.finetune else (),
        "ranks": SENS_RANKS if speed else (),
    }
    per_layer = sum(len(v) for v in scans.values())
    if not per_layer:
        return None, "skipped: no per-layer setting applies to this budget"
    t0 = time.monotonic()
    score_of(task, model, batches)
    layers = sum(1 for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear))
    estimate = (time.monotonic() - t0) * per_layer * layers
    if estimate > 0.2 * budget.time_limit_s:
        return None, (f"skipped: the scan would take ~{estimate:.0f} s, more than 20 % of the "
                      "time limit")  # fmt: skip
    say(
        f"measuring per-layer sensitivity ({layers} layers x {per_layer} settings, ~{estimate:.0f} s)"
    )
    sens = measure_sensitivity(model, batches, calibration, task=task, **scans)
    return sens, f"measured in {sens.seconds:.1f} s on {sens.samples} samples of {where}"
