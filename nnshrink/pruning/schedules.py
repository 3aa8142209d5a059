"""Pruning schedules as pure functions: how sparse the model should be at each round or step.

Three schedules cover the classic recipes:

- :func:`one_shot` — prune to the target once (then optionally fine-tune).
- :func:`iterative` — prune → retrain → prune more (Han et al. 2015). With ``spacing="geometric"``
  every round removes the same fraction of the weights still alive, which is how the paper's
  "sparsity steps" reach ~92 % without a large drop at any one step.
- :func:`agp` — automated gradual pruning (Zhu & Gupta 2017): the cubic schedule
  ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` evaluated at training step ``t``;
  :class:`nnshrink.pruning.AGPCallback` applies it during training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Spacing = Literal["geometric", "linear"]


def _check_sparsity(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


def one_shot(final: float) -> list[float]:
    """Prune straight to ``final`` in a single round.

    Example:
        >>> one_shot(0.9)
        [0.9]
    """
    _check_sparsity("final", final)
    return [float(final)]


def at_progress(
    final: float, progress: float, *, initial: float = 0.0, spacing: Spacing = "geometric"
) -> float:
    """Sparsity reached after a fraction ``progress`` in [0, 1] of an iterative schedule.

    Args:
        final: sparsity at ``progress == 1``.
        progress: how far through the schedule (0 = start, 1 = done).
        initial: sparsity at ``progress == 0``.
        spacing: ``"geometric"`` interpolates the density (``1 - sparsity``) in log space, so each
            equal step of progress prunes the same fraction of the surviving weights;
            ``"linear"`` interpolates the sparsity itself.

    Example:
        >>> round(at_progress(0.99, 0.5), 4)  # density 1 -> 0.01: halfway is density 0.1
        0.9
    """
    _check_sparsity("final", final)
    _check_sparsity("initial", initial)
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    if spacing == "linear":
        return initial + (final - initial) * progress
    if spacing == "geometric":
        d0, d1 = 1.0 - initial, 1.0 - final
        return 1.0 - d0 * (d1 / d0) ** progress
    raise ValueError(f"spacing must be 'geometric' or 'linear', got {spacing!r}")


def iterative(
    final: float,
    steps: int | Sequence[float],
    *,
    initial: float = 0.0,
    spacing: Spacing = "geometric",
) -> list[float]:
    """Sparsity targets for prune → retrain rounds, ending exactly at ``final``.

    Args:
        final: sparsity after the last round.
        steps: number of rounds ``n`` (progress ``k / n`` for ``k = 1..n``), or explicit progress
            fractions in (0, 1], increasing, the last equal to 1.
        initial: sparsity before the first round (e.g. a model that is already partly pruned).
        spacing: see :func:`at_progress`.

    Example:
        >>> [round(s, 3) for s in iterative(0.875, 3)]  # density halves every round
        [0.5, 0.75, 0.875]
        >>> [round(s, 2) for s in iterative(0.8, 4, spacing="linear")]
        [0.2, 0.4, 0.6, 0.8]
    """
    progress = progress_points(steps)
    out = [at_progress(final, p, initial=initial, spacing=spacing) for p in progress]
    out[-1] = float(final)  # exact, whatever the floating-point path
    return out


def progress_points(steps: int | Sequence[float]) -> list[float]:
    """Normalise ``steps`` (a count or explicit fractions) to a list of progress values.

    Example:
        >>> progress_points(4)
        [0.25, 0.5, 0.75, 1.0]
    """
    if isinstance(steps, bool):
        raise TypeError("steps must be an int or a sequence of floats, not a bool")
    if isinstance(steps, int):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return [k / steps for k in range(1, steps + 1)]
    points = [float(p) for p in steps]
    if not points:
        raise ValueError("steps must not be empty")
    if any(b <= a for a, b in zip(points, points[1:])) or points[0] <= 0:
        raise ValueError(f"progress fractions must be > 0 and strictly increasing, got {points}")
    if abs(points[-1] - 1.0) > 1e-9:
        raise ValueError(f"the last progress fraction must be 1.0, got {points[-1]}")
    return points


def agp(
    step: int,
    *,
    final: float,
    initial: float = 0.0,
    start_step: int = 0,
    n_steps: int = 10,
    frequency: int = 1,
) -> float:
    """Automated gradual pruning (Zhu & Gupta 2017): the target sparsity at training step ``step``.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` for ``t0 <= t <= t0 + n * dt``,
    where pruning happens only every ``dt`` steps: ``t`` is rounded down to the last pruning step.
    Before ``t0`` the target is ``s_i``; after ``t0 + n * dt`` it stays ``s_f``.

    Args:
        step: the training step ``t`` (0-based count of optimizer steps).
        final: ``s_f``, the sparsity reached at ``t0 + n * dt``.
        initial: ``s_i``, the sparsity at ``t0``.
        start_step: ``t0``.
        n_steps: ``n``, the number of pruning events after ``t0``.
        frequency: ``dt``, optimizer steps between pruning events.

    Example:
        >>> agp(0, final=0.9, n_steps=10, frequency=100)
        0.0
        >>> round(agp(500, final=0.9, n_steps=10, frequency=100), 4)  # 0.9 * (1 - 0.5**3)
        0.7875
        >>> agp(5000, final=0.9, n_steps=10, frequency=100)
        0.9
    """
    _check_sparsity("final", final)
    _check_sparsity("initial", initial)
    if n_steps < 1 or frequency < 1:
        raise ValueError(f"n_steps and frequency must be >= 1, got {n_steps}, {frequency}")
    if step <= start_step:
        return float(initial)
    events = min((step - start_step) // frequency, n_steps)
    if events >= n_steps:
        return float(final)
    remaining = 1.0 - events / n_steps
    return final + (initial - final) * remaining**3


def agp_pruning_steps(*, start_step: int = 0, n_steps: int = 10, frequency: int = 1) -> list[int]:
    """Training steps at which :func:`agp` prunes: ``t0, t0 + dt, ..., t0 + n * dt``.

    Example:
        >>> agp_pruning_steps(start_step=10, n_steps=3, frequency=5)
        [10, 15, 20, 25]
    """
    return [start_step + k * frequency for k in range(n_steps + 1)]
