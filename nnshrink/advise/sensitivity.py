"""Per-layer sensitivity for the advisor: each layer compressed alone, no training.

The issue asks the advisor to "measure cheaply first (per-layer sensitivity to pruning, bit width
and rank)". :func:`measure_sensitivity` compresses one layer at a time, with no training, and
measures the top-1 drop on a few validation batches:

* **bits**: the layer's non-zero weights shared by k-means at ``b`` bits (what the ``share``
  stage does), for ``b`` in 8, 6, 5, 4, 3, 2;
* **sparsity**: magnitude pruning of the layer alone
  (:func:`nnshrink.pruning.layer_sensitivity`);
* **channels**: the layer's output channels removed by structured pruning (the same function
  with ``structured=True``), with the MACs left after that edit;
* **rank**: the layer alone factorised at a fraction of its MACs (Tucker-2 for a grouped-free
  conv larger than 1x1, SVD for a Linear; :class:`~nnshrink.lowrank.LowRank` with
  ``rank="macs"``), with the model's MACs after that edit.

:mod:`.allocation` turns the tables into candidates with per-layer settings.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..core import eval_mode

SENS_BITS = (8, 6, 5, 4, 3, 2)
SENS_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
SENS_CHANNELS = (0.2, 0.4, 0.6, 0.8)
SENS_RANKS = (0.7, 0.5, 0.35, 0.25)  # fraction of the layer's MACs kept by the factorisation


@dataclasses.dataclass
class LayerSensitivity:
    """Top-1 drops (fractions, positive = worse) of one layer compressed alone.

    Attributes:
        name: qualified module name.
        type: ``"Conv2d"`` or ``"Linear"``.
        weights: number of weights.
        macs: MACs per sample of the layer in the baseline.
        bits: ``{bit width: drop}`` for k-means sharing.
        sparsity: ``{sparsity: drop}`` for magnitude pruning.
        channels: ``{fraction of output channels removed: drop}`` (empty when the layer's
            channels cannot change alone, e.g. the output layer).
        channel_macs: ``{fraction: model MACs per sample after that edit}``.
        rank: ``{fraction of the layer's MACs kept by a low-rank factorisation: drop}`` (empty
            for layers that cannot be factorised: 1x1 or grouped convs).
        rank_macs: ``{fraction: model MACs per sample after that factorisation}``.
    """

    name: str
    type: str
    weights: int
    macs: int = 0
    bits: dict[int, float] = dataclasses.field(default_factory=dict)
    sparsity: dict[float, float] = dataclasses.field(default_factory=dict)
    channels: dict[float, float] = dataclasses.field(default_factory=dict)
    channel_macs: dict[float, int] = dataclasses.field(default_factory=dict)
    rank: dict[float, float] = dataclasses.field(default_factory=dict)
    rank_macs: dict[float, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Sensitivity:
    """Per-layer sensitivity tables of a model (see :func:`measure_sensitivity`)."""

    baseline_top1: float
    macs: int
    layers: list[LayerSensitivity]
    samples: int
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able; the dict keys of the tables become strings)."""
        return {
            "baseline_top1": self.baseline_top1, "macs": self.macs, "samples": self.samples,
            "seconds": self.seconds,
            "layers": [{**dataclasses.asdict(r),
                        **{k: {str(x): v for x, v in getattr(r, k).items()}
                           for k in ("bits", "sparsity", "channels", "channel_macs", "rank",
                                     "rank_macs")}}
                       for r in self.layers],
        }  # fmt: skip

    def to_markdown(self) -> str:
        """One row per layer: the top-1 drop (points) at each bit width, sparsity, channel ratio
        and low-rank MAC fraction."""
        bits = sorted({b for r in self.layers for b in r.bits}, reverse=True)
        sps = sorted({s for r in self.layers for s in r.sparsity})
        chs = sorted({c for r in self.layers for c in r.channels})
        rks = sorted({k for r in self.layers for k in r.rank}, reverse=True)
        head = (["layer", "weights"] + [f"{b} bit" for b in bits] + [f"sp {s:g}" for s in sps]
                + [f"ch -{c:g}" for c in chs] + [f"rank {k:g}" for k in rks])  # fmt: skip
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

        def cell(table: Mapping[Any, float], key: Any) -> str:
            return "-" if key not in table else f"{100 * table[key]:.1f}"

        for r in self.layers:
            cells = ([r.name, f"{r.weights:,}"] + [cell(r.bits, b) for b in bits]
                     + [cell(r.sparsity, s) for s in sps] + [cell(r.channels, c) for c in chs]
                     + [cell(r.rank, k) for k in rks])  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


# -- measurement ------------------------------------------------------------------------------


def kmeans_share_weight(weight: torch.Tensor, bits: int, iterations: int = 100) -> torch.Tensor:
    """``weight`` with its non-zero values replaced by their k-means centroid (``2**bits``).

    Zeros stay zero, as in the ``share`` stage (:class:`nnshrink.sharing.WeightSharing`,
    linear initialisation).

    Example:
        >>> w = torch.tensor([0.0, 0.1, 0.11, 1.0])
        >>> [round(x, 3) for x in kmeans_share_weight(w, 1).tolist()]
        [0.0, 0.105, 0.105, 1.0]
    """
    from ..sharing.clustering import kmeans_1d

    mask = weight != 0
    out = weight.detach().clone()
    if not bool(mask.any()):
        return out
    centroids, labels = kmeans_1d(weight[mask], 2**bits, iterations=iterations)
    out[mask] = centroids[labels].to(out.dtype)
    return out


def bit_sensitivity(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    layers: Sequence[tuple[str, nn.Module]],
    bits: Sequence[int] = SENS_BITS,
) -> dict[str, dict[int, float]]:
    """``{layer: {bits: metric}}`` with one layer's weights k-means shared at a time.

    The weights are restored bit for bit after each layer.
    """
    out: dict[str, dict[int, float]] = {}
    for name, module in layers:
        original = module.weight.detach().clone()
        out[name] = {}
        try:
            for b in bits:
                with torch.no_grad():
                    module.weight.copy_(kmeans_share_weight(original, b))
                out[name][b] = float(evaluate(model))
        finally:
            with torch.no_grad():
                module.weight.copy_(original)
    return out


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if type(m) in (nn.Conv2d, nn.Linear) and n]  # fmt: skip


def measure_sensitivity(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    example_inputs: torch.Tensor,
    *,
    bits: Sequence[int] = SENS_BITS,
    sparsities: Sequence[float] = SENS_SPARSITIES,
    channels: Sequence[float] = SENS_CHANNELS,
    ranks: Sequence[float] = (),
) -> Sensitivity:
    """Compress each Conv2d / Linear layer alone, without training, and measure the top-1 drop.

    Args:
        model: the trained model (not modified).
        loader: a few validation batches (the drop is measured there).
        example_inputs: one input batch (structured pruning traces the model with it).
        bits: k-means bit widths to try (empty: skip).
        sparsities: magnitude-pruning sparsities to try (empty: skip).
        channels: fractions of output channels to remove (empty: skip).
        ranks: fractions of each layer's MACs kept by a low-rank factorisation (empty: skip;
            :data:`SENS_RANKS` is the advisor's set).

    Example:
        >>> sens = measure_sensitivity(model, val_batches, x, channels=())  # doctest: +SKIP
        >>> sens.layers[0].bits[4]  # drop at 4 bits, as a fraction  # doctest: +SKIP
    """
    from ..metrics import count_macs, profile_macs
    from ..pruning import layer_sensitivity
    from ..train import evaluate as evaluate_loader

    t0 = time.monotonic()
    batches = list(loader)
    samples = sum(len(y) for _, y in batches)

    def top1(m: nn.Module) -> float:
        return float(evaluate_loader(m, batches)["top1"])

    work = copy.deepcopy(model)
    example = example_inputs[:1]
    with eval_mode(work):
        base = top1(work)
        layers = _layers(work)
        per_macs = {r.name: r.macs for r in profile_macs(work, (example,))}
        rows = {n: LayerSensitivity(n, type(m).__name__, m.weight.numel(), int(per_macs.get(n, 0)))
                for n, m in layers}  # fmt: skip
        if bits:
            for n, table in bit_sensitivity(work, top1, layers, bits).items():
                rows[n].bits = {b: base - v for b, v in table.items()}
        if sparsities:
            res = layer_sensitivity(work, top1, ratios=sparsities)
            for n, values in res.scores.items():
                if n in rows:  # (the scan also takes Conv2d / Linear subclasses)
                    rows[n].sparsity = {s: base - v for s, v in zip(res.ratios, values)}
        if channels:
            _channel_scan(work, top1, example_inputs, channels, rows)
        if ranks:
            _rank_scan(work, top1, base, example, ranks, layers, rows)
        macs = int(count_macs(work, (example,)))
    return Sensitivity(base, macs, list(rows.values()), samples, time.monotonic() - t0)


def _channel_scan(model, top1, example_inputs, ratios, rows) -> None:
    """Structured scan via :func:`nnshrink.pruning.layer_sensitivity`, also recording MACs.

    The scan calls the metric once per (layer, ratio) whose edit changed the model, layer by
    layer and ratio by ratio, and leaves NaN where nothing could change; the MACs recorded at
    each call are matched back to the table in that same order.
    """
    from ..metrics import count_macs
    from ..pruning import layer_sensitivity

    example = example_inputs[:1]
    calls: list[tuple[float, int]] = []

    def metric(m: nn.Module) -> float:
        value = top1(m)
        calls.append((value, int(count_macs(m, (example,)))))
        return value

    res = layer_sensitivity(model, metric, ratios=ratios, structured=True, method="l2",
                            example_inputs=example_inputs)  # fmt: skip
    it = iter(calls[1:])  # the first call measured the unpruned model
    for name, values in res.scores.items():
        for r, v in zip(res.ratios, values):
            if math.isnan(v):
                continue
            value, macs = next(it)
            if name in rows:
                rows[name].channels[r] = res.baseline - value
                rows[name].channel_macs[r] = macs


def factorisation_method(module: nn.Module) -> str | None:
    """``"tucker"`` for a conv that Tucker-2 can factorise, ``"svd"`` for a Linear, else ``None``.

    Example:
        >>> factorisation_method(nn.Conv2d(8, 8, 3)), factorisation_method(nn.Conv2d(8, 8, 1))
        ('tucker', None)
    """
    # the same checks LowRank applies when it picks layers (plain, non-grouped, larger than 1x1)
    from ..lowrank.decompose import factorisable_conv_reason

    if type(module) is nn.Linear:
        return "svd"
    if isinstance(module, nn.Conv2d) and factorisable_conv_reason(module) is None:
        return "tucker"
    return None


def _rank_scan(model, top1, base, example, ratios, layers, rows) -> None:
    """Each factorisable layer alone at each MAC fraction, on a copy of the model."""
    from ..core import compress_
    from ..lowrank import LowRank
    from ..metrics import count_macs

    for name, module in layers:
        method = factorisation_method(module)
        if method is None:
            continue
        for ratio in ratios:
            trial = copy.deepcopy(model)
            config = LowRank(method=method, rank="macs", macs_ratio=ratio, layers=(name,))
            report = compress_(trial, config, example_inputs=example).summary
            if not report.decomposed:  # no rank saves MACs at this ratio
                continue
            rows[name].rank[ratio] = base - top1(trial)
            rows[name].rank_macs[ratio] = int(count_macs(trial, (example,)))
