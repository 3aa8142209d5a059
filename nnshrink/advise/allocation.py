"""Per-layer settings from the sensitivity tables: the allocator and the ``*-sens`` candidates.

:func:`allocate` (pure) picks one setting per layer that meets a total cost (bytes or MACs) with
the least summed drop: a multiple-choice knapsack solved exactly by dynamic programming over a
cost grid (costs are rounded *up*, so the answer always meets the limit).
:func:`sensitivity_candidates` turns the allocations into recipe stages with per-layer
``per_layer`` dicts (magnitude-pruning sparsities, k-means bit widths, channel ratios), sized on
the measured artifact by a few zero-shot probes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .budget import Budget, Measurement
from .candidates import Candidate, Probe, _finetune
from .sensitivity import LayerSensitivity, Sensitivity

#: ``.nns`` relative-index bits per kept weight of a sparse layer (the encode stage's defaults)
INDEX_BITS = {"Conv2d": 4, "Linear": 5}


# -- allocation -------------------------------------------------------------------------------


def monotone(drops: Mapping[float, float], stronger_first: bool = False) -> dict[float, float]:
    """Drops made non-negative and non-decreasing with strength (a stronger setting is never
    scored better than a gentler one: small gains are measurement noise).

    Args:
        drops: ``{setting: drop}``.
        stronger_first: settings sort strong → gentle by value (bit widths: 2 is stronger
            than 8); otherwise larger values are stronger (sparsity, channel ratio).

    Example:
        >>> monotone({0.5: 0.01, 0.7: -0.02, 0.9: 0.05})
        {0.5: 0.01, 0.7: 0.01, 0.9: 0.05}
    """
    out, worst = {}, 0.0
    for key in sorted(drops, reverse=stronger_first):
        worst = max(worst, drops[key])
        out[key] = worst
    return out


def allocate(
    options: Mapping[str, Sequence[tuple[float, float]]],
    budget: float,
    resolution: int = 2000,
) -> dict[str, int] | None:
    """One option per layer: least summed drop with summed cost ``<= budget``; ``None`` if none fits.

    A multiple-choice knapsack, solved exactly on a grid of ``budget / resolution`` by dynamic
    programming. Costs are rounded up to the grid, so the choice always meets ``budget``; among
    equal drops the one that uses more of the budget (the gentler one) wins.

    Args:
        options: ``{layer: [(cost, drop), ...]}`` with costs ``>= 0``.
        budget: the total cost allowed.
        resolution: grid steps over ``[0, budget]``.

    Returns:
        ``{layer: index of the chosen option}``.

    Example:
        >>> opts = {"a": [(8, 0.0), (4, 0.3)], "b": [(8, 0.0), (4, 0.01)]}
        >>> allocate(opts, budget=12, resolution=12)
        {'a': 0, 'b': 1}
    """
    if budget < 0 or not options:
        return None if budget < 0 else {}
    unit = budget / resolution if budget > 0 else 1.0
    size = resolution + 1
    best = np.zeros(size)  # best[c]: least drop of the layers so far with cost <= c units
    picks: list[np.ndarray] = []
    names = list(options)
    for name in names:
        new = np.full(size, np.inf)
        pick = np.full(size, -1, dtype=np.int64)
        for i, (cost, drop) in enumerate(options[name]):
            w = int(math.ceil(cost / unit - 1e-9))
            if w > resolution:
                continue
            # the tiny bonus for cost breaks ties towards the gentler option
            value = np.full(size, np.inf)
            value[w:] = best[: size - w] + drop - 1e-9 * w / size
            better = value < new
            new[better], pick[better] = value[better], i
        best = new
        picks.append(pick)
    if not np.isfinite(best[-1]):
        return None
    out: dict[str, int] = {}
    c = resolution
    for name, pick in zip(reversed(names), reversed(picks)):
        i = int(pick[c])
        out[name] = i
        c -= int(math.ceil(options[name][i][0] / unit - 1e-9))
    return dict(reversed(list(out.items())))


# -- candidates -------------------------------------------------------------------------------


def layer_bytes(row: LayerSensitivity, sparsity: float, bits: int) -> float:
    """Rough ``.nns`` bytes of one layer pruned to ``sparsity`` and shared at ``bits``.

    Kept weights cost their codebook index and, when sparse, a relative position; Huffman
    saves ~15 %; plus the codebook (the same model as :func:`~.candidates.estimate_share_bytes`).
    """
    kept = row.weights * (1.0 - sparsity)
    per_weight = bits + (INDEX_BITS.get(row.type, 5) if sparsity > 0 else 0)
    return 0.85 * kept * per_weight / 8 + 4 * 2**bits


def storage_options(
    sens: Sensitivity, prune: bool
) -> dict[str, list[tuple[float, float, tuple[float, int]]]]:
    """``{layer: [(bytes, drop, (sparsity, bits)), ...]}``; drops of pruning and sharing added."""
    out = {}
    for r in sens.layers:
        bits = monotone(r.bits, stronger_first=True)
        sps = {0.0: 0.0, **(monotone(r.sparsity) if prune else {})}
        out[r.name] = [(layer_bytes(r, s, b), ds + db, (s, b))
                       for s, ds in sps.items() for b, db in bits.items()]  # fmt: skip
    return out


def _pattern(name: str) -> str:
    return re.escape(name)


def storage_stages(
    choice: Mapping[str, tuple[float, int]], finetune: bool, epochs: int, lr: float
) -> tuple[dict[str, Any], ...]:
    """Recipe stages: per-layer magnitude pruning (two steps above 80 %) + fine-tune, per-layer
    k-means sharing + centroid fine-tune, ``.nns`` encoding."""
    stages: list[dict[str, Any]] = []
    sparse = {n: s for n, (s, _) in choice.items() if s > 0}
    if sparse:
        steps = [sparse]
        if max(sparse.values()) > 0.8:  # as the uniform candidates: high targets in two steps
            steps = [{n: round(1 - math.sqrt(1 - s), 3) for n, s in sparse.items()}, sparse]
        for step in steps:
            stages.append({"prune": {"type": "magnitude-pruning", "sparsity": 0.0,
                                     "per_layer": {_pattern(n): s for n, s in step.items()}}})  # fmt: skip
            if finetune:
                stages.append(_finetune(epochs, lr))
    bits = {n: b for n, (_, b) in choice.items()}
    stages.append({"share": {"type": "weight-sharing", "bits": max(bits.values()),
                             "per_layer": {_pattern(n): b for n, b in bits.items()}}})  # fmt: skip
    if finetune:
        stages.append(_finetune(epochs, lr / 10))
    stages.append({"encode": {}})
    return tuple(stages)


def struct_stages(
    ratios: Mapping[str, float], finetune: bool, epochs: int, lr: float
) -> tuple[dict[str, Any], ...]:
    """Recipe stages: structured pruning with per-layer channel ratios (+ fine-tune).

    ``ratios`` must list every Conv2d / Linear layer in module order, unpruned ones at 0: a
    channel group also names the layers that consume it, and the pruner takes the *first*
    ``per_layer`` pattern matching any of the group's modules, so each producer must come (and
    claim its group) before its consumers.
    """
    prune = {"prune": {"type": "structured-pruning", "ratio": 0.0, "criterion": "l2",
                       "per_layer": {_pattern(n): r for n, r in ratios.items()}}}  # fmt: skip
    return (prune, _finetune(epochs, lr, keep_zeros=False)) if finetune else (prune,)


def lowrank_stages(
    ratios: Mapping[str, float],
    methods: Mapping[str, str],
    finetune: bool,
    epochs: int,
    lr: float,
) -> tuple[dict[str, Any], ...]:
    """Recipe stages: one ``decompose`` stage per (method, MAC fraction) with its ``layers``
    (+ fine-tune). Layers at 1.0 stay dense (the per-layer scan measured exact ranks, so they
    are not rounded; the uniform candidates add rounded variants for ONNX Runtime)."""
    groups: dict[tuple[str, float], list[str]] = {}
    for name, r in ratios.items():
        if r < 1.0:
            groups.setdefault((methods[name], r), []).append(name)
    stages: list[dict[str, Any]] = [
        {"decompose": {"type": "low-rank", "method": method, "rank": "macs", "macs_ratio": r,
                       "layers": names}}
        for (method, r), names in sorted(groups.items())
    ]  # fmt: skip
    if finetune:
        stages.append(_finetune(epochs, lr, keep_zeros=False))
    return tuple(stages)


def _speed_options(
    rows: Sequence[LayerSensitivity], model_macs: int, table: str, dense: float
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[float]], float]:
    """Allocator options for a MAC target from one per-layer table (``channels`` or ``rank``).

    Returns ``(options, settings, fixed)``: per layer ``[(MACs not saved against its strongest
    option, drop)]``, the setting of each option (``dense`` first), and the MACs no option can
    remove (subtract them from the target).
    """
    opts, settings = {}, {}
    stronger_first = table == "rank"  # a smaller kept fraction is stronger
    for r in rows:
        drops_table = getattr(r, table)
        macs_table = getattr(r, "channel_macs" if table == "channels" else "rank_macs")
        saved = {dense: 0, **{c: model_macs - m for c, m in macs_table.items()}}
        drops = {dense: 0.0, **monotone(drops_table, stronger_first=stronger_first)}
        top = max(saved.values())
        opts[r.name] = [(top - saved[c], drops[c]) for c in saved]
        settings[r.name] = list(saved)
    fixed = model_macs - sum(max(c for c, _ in o) for o in opts.values())
    return opts, settings, fixed


def _scaled_search(
    make: Callable[[float], tuple[dict[str, Any], ...] | None],
    probe: Probe | None,
    value_of: Callable[[Measurement], float | None],
    limit: float,
    start: float,
    tries: int = 6,
    refine: int = 3,
) -> tuple[dict[str, Any], ...] | None:
    """Stages for an allocation target, corrected until the measured value fits ``limit``.

    The per-layer cost models are approximate (headers, Huffman gains, coupled layers), so the
    target is corrected from zero-shot probes: by the secant through the last two
    (target, measured) points, or in proportion while there is only one. Once a target fits,
    ``refine`` more probes use the slack (a gentler allocation that still fits): bisection
    towards the last target that did not fit, or, when the first one fit, proportional steps
    up until one does not.
    """
    target, points = start, []
    fit: tuple[float, tuple[dict[str, Any], ...]] | None = None
    miss: float | None = None
    for _ in range(tries):
        stages = make(target)
        if stages is None:
            return None
        if probe is None:
            return stages
        m = probe(stages)
        value = None if m is None else value_of(m)
        if value is None:
            return None
        if value <= limit:
            fit = (target, stages)
            break
        miss = target
        points.append((target, value))
        goal = 0.99 * limit
        if len(points) >= 2 and points[-1][1] != points[-2][1]:
            (t0, v0), (t1, v1) = points[-2:]
            slope = (v1 - v0) / (t1 - t0) if t1 != t0 else 0.0
            nxt = t1 + (goal - v1) / slope if slope > 0 else t1 * goal / v1
        else:
            nxt = target * goal / value
        target = min(nxt, 0.99 * target)  # always stronger than the last, which did not fit
    if fit is None:
        return None
    lo, fitted = fit[0], value
    for _ in range(refine):
        if miss is None:  # nothing missed yet: step up in proportion to the slack
            if fitted >= 0.95 * limit:
                break
            mid = lo * 0.99 * limit / fitted
        else:
            mid = (lo + miss) / 2
        stages = make(mid)
        if stages == fit[1]:  # the same allocation: it fits, no need to measure it again
            lo = mid
            continue
        m = None if stages is None else probe(stages)
        value = None if m is None else value_of(m)
        if value is not None and value <= limit:
            lo, fit, fitted = mid, (mid, stages), value
        else:
            miss = mid
    return fit[1]


def sensitivity_candidates(
    budget: Budget,
    baseline: Measurement,
    sens: Sensitivity,
    *,
    epochs: int = 1,
    lr: float = 1e-3,
    probe: Probe | None = None,
    keep_fraction: float = 1.0,
) -> list[Candidate]:
    """Candidates whose per-layer settings come from the sensitivity tables.

    * bytes budget: per-layer sparsity (with fine-tuning data) and k-means bit width, allocated
      for the least summed drop under the size limit (``prune-share-sens`` / ``share-sens``);
    * MAC / latency budget (with fine-tuning data): per-layer channel ratios under the MAC
      target (``struct-sens``), ``keep_fraction`` of the baseline's MACs to start with.

    Args:
        budget: the limits.
        baseline: the baseline's measurement (MACs).
        sens: :func:`measure_sensitivity` of the model.
        epochs, lr: recovery stages (as in :func:`~.candidates.generate`).
        probe: zero-shot measurement of stages (sizes the allocation on the real artifact).
        keep_fraction: fraction of the baseline's MACs / latency the budget allows.
    """
    out: list[Candidate] = []
    ft = budget.finetune
    if budget.max_bytes is not None and any(r.bits for r in sens.layers):
        options = storage_options(sens, prune=ft)
        fixed = 1024.0  # header, biases, norms: corrected by the probes
        limit = 0.97 * budget.max_bytes  # the same margin as the uniform candidates

        def make(target: float):
            picks = allocate({n: [(c, d) for c, d, _ in o] for n, o in options.items()},
                             target - fixed)  # fmt: skip
            if picks is None:
                return None
            choice = {n: options[n][i][2] for n, i in picks.items()}
            return storage_stages(choice, ft, epochs, lr)

        stages = _scaled_search(make, probe, lambda m: m.bytes, limit, limit)
        if stages is not None:
            pruned = any(next(iter(s)) == "prune" for s in stages)
            name = "prune-share-sens" if pruned else "share-sens"
            out.append(Candidate(name, name, stages,
                                 "per-layer sparsity and k-means bits from the per-layer "
                                 "sensitivity scan (least summed val drop for the size)"))  # fmt: skip
    speed = budget.max_macs is not None or budget.max_latency_ms is not None

    def value(m: Measurement) -> float | None:
        # the tighter of the MAC and latency limits, as a fraction of the allowance
        parts = []
        if budget.max_macs is not None and m.macs is not None:
            parts.append(m.macs / budget.max_macs)
        if budget.max_latency_ms is not None:
            if m.latency_ms is None:
                return None
            # 5 % margin: the refinement pushes towards the limit, and a trained run's
            # latency is measured again (noise would otherwise fail it by a hair)
            parts.append(m.latency_ms / (0.95 * budget.max_latency_ms))
        return max(parts) if parts else None

    target_macs = keep_fraction * (baseline.macs or 0)
    if budget.max_macs is not None:
        target_macs = min(target_macs, budget.max_macs)

    if speed and ft and any(r.channels for r in sens.layers) and baseline.macs:
        rows = [r for r in sens.layers if r.channels]

        def make_struct(target: float):
            opts, settings, fixed = _speed_options(rows, sens.macs, "channels", 0.0)
            picks = allocate(opts, target - fixed)
            if picks is None:
                return None
            ratios = {r.name: settings[r.name][picks[r.name]] if r.name in picks else 0.0
                      for r in sens.layers}  # fmt: skip
            if not any(ratios.values()):
                return None
            return struct_stages(ratios, ft, epochs, lr)

        stages = _scaled_search(make_struct, probe, value, 1.0, target_macs)
        if stages is not None:
            out.append(Candidate("struct-sens-ft", "structured-sens", stages,
                                 "per-layer channel ratios from the per-layer structured "
                                 "sensitivity scan (least summed val drop for the MACs)"))  # fmt: skip
    if speed and any(r.rank for r in sens.layers) and baseline.macs:
        rank_rows = [r for r in sens.layers if r.rank]
        methods = {r.name: "tucker" if r.type == "Conv2d" else "svd" for r in rank_rows}

        def make_rank(target: float):
            opts, settings, fixed = _speed_options(rank_rows, sens.macs, "rank", 1.0)
            picks = allocate(opts, target - fixed)
            if picks is None:
                return None
            ratios = {n: settings[n][i] for n, i in picks.items()}
            if all(r >= 1.0 for r in ratios.values()):
                return None
            return lowrank_stages(ratios, methods, ft, epochs, lr)

        stages = _scaled_search(make_rank, probe, value, 1.0, target_macs)
        if stages is not None:
            name = "lowrank-sens" + ("-ft" if ft else "")
            out.append(Candidate(name, "low-rank-sens", stages,
                                 "per-layer low-rank MAC fractions from the per-layer rank "
                                 "sensitivity scan (least summed val drop for the MACs)"))  # fmt: skip
    return out
