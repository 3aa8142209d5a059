"""Per-layer sensitivity for the advisor: each layer compressed alone, no training.

The issue asks the advisor to "measure cheaply first (per-layer sensitivity to pruning, bit width
and rank)". :func:`measure_sensitivity` compresses one layer at a time, with no training, and
measures the drop of the task's metric (top-1 by default) on a few selection batches. Every table
is one run of the shared scan :func:`nnshrink.core.scan_layers` with its own edit:

* **bits**: the layer's non-zero weights shared by k-means at ``b`` bits (what the ``share``
  stage does), for ``b`` in 8, 6, 5, 4, 3, 2;
* **sparsity**: magnitude pruning of the layer alone
  (:func:`nnshrink.pruning.sensitivity.unstructured_edit`, the edit of
  :func:`nnshrink.pruning.layer_sensitivity`);
* **channels**: the layer's output channels removed by structured pruning
  (:func:`nnshrink.pruning.sensitivity.structured_edit`), with the MACs left after that edit;
* **rank**: the layer alone factorised at a fraction of its MACs (Tucker-2 for a grouped-free
  conv larger than 1x1, SVD for a Linear; :class:`~nnshrink.lowrank.LowRank` with
  ``rank="macs"``), with the model's MACs after that edit.

:mod:`.allocation` turns the tables into candidates with per-layer settings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

SENS_BITS = (8, 6, 5, 4, 3, 2)
SENS_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
SENS_CHANNELS = (0.2, 0.4, 0.6, 0.8)
SENS_RANKS = (0.7, 0.5, 0.35, 0.25)  # fraction of the layer's MACs kept by the factorisation


@dataclasses.dataclass
class LayerSensitivity:
    """Drops of the metric (its own units, positive = worse) of one layer compressed alone.

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
    """Per-layer sensitivity tables of a model (see :func:`measure_sensitivity`).

    Attributes:
        baseline: the metric's headline value of the uncompressed model.
        macs: its MACs per sample.
        layers: one row of tables per Conv2d / Linear layer.
        samples: samples the metric was measured on.
        seconds: wall time of the scans.
        headline: the metric's headline key (``"top1"`` by default).
        higher_is_better: its direction.
    """

    baseline: float
    macs: int
    layers: list[LayerSensitivity]
    samples: int
    seconds: float = 0.0
    headline: str = "top1"
    higher_is_better: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able; the dict keys of the tables become strings)."""
        return {
            "baseline": self.baseline, "headline": self.headline,
            "higher_is_better": self.higher_is_better, "macs": self.macs,
            "samples": self.samples, "seconds": self.seconds,
            "layers": [{**dataclasses.asdict(r),
                        **{k: {str(x): v for x, v in getattr(r, k).items()}
                           for k in ("bits", "sparsity", "channels", "channel_macs", "rank",
                                     "rank_macs")}}
                       for r in self.layers],
        }  # fmt: skip

    def to_markdown(self) -> str:
        """One row per layer: the drop at each bit width, sparsity, channel ratio and low-rank
        MAC fraction (points for top-1 / top-5, the metric's own units otherwise)."""
        points = self.headline in ("top1", "top5")
        bits = sorted({b for r in self.layers for b in r.bits}, reverse=True)
        sps = sorted({s for r in self.layers for s in r.sparsity})
        chs = sorted({c for r in self.layers for c in r.channels})
        rks = sorted({k for r in self.layers for k in r.rank}, reverse=True)
        head = (["layer", "weights"] + [f"{b} bit" for b in bits] + [f"sp {s:g}" for s in sps]
                + [f"ch -{c:g}" for c in chs] + [f"rank {k:g}" for k in rks])  # fmt: skip
        lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

        def cell(table: Mapping[Any, float], key: Any) -> str:
            if key not in table:
                return "-"
            return f"{100 * table[key]:.1f}" if points else f"{table[key]:.3g}"

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


def share_edit(model: nn.Module, name: str, bits: int) -> None:
    """The scan edit that k-means shares one layer's weights at ``bits`` (in place).

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 8))
        >>> share_edit(m, "0", 1); m[0].weight.unique().numel() <= 2
        True
    """
    weight = model.get_submodule(name).weight
    with torch.no_grad():
        weight.copy_(kmeans_share_weight(weight.detach(), bits))


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if type(m) in (nn.Conv2d, nn.Linear) and n]  # fmt: skip


def measure_sensitivity(
    model: nn.Module,
    loader: Iterable[Any],
    example_inputs: Any,
    *,
    task: Any = None,
    bits: Sequence[int] = SENS_BITS,
    sparsities: Sequence[float] = SENS_SPARSITIES,
    channels: Sequence[float] = SENS_CHANNELS,
    ranks: Sequence[float] = (),
) -> Sensitivity:
    """Compress each Conv2d / Linear layer alone, without training, and measure the metric's drop.

    Args:
        model: the trained model (not modified).
        loader: a few selection batches (the drop is measured there; read once).
        example_inputs: one input batch (structured pruning traces the model with it).
        task: the :class:`~nnshrink.train.task.Task` whose headline is measured (default:
            top-1); drops are in its units and signed by its direction.
        bits: k-means bit widths to try (empty: skip).
        sparsities: magnitude-pruning sparsities to try (empty: skip).
        channels: fractions of output channels to remove (empty: skip).
        ranks: fractions of each layer's MACs kept by a low-rank factorisation (empty: skip;
            :data:`SENS_RANKS` is the advisor's set).

    Example:
        >>> sens = measure_sensitivity(model, val_batches, x, channels=())  # doctest: +SKIP
        >>> sens.layers[0].bits[4]  # drop at 4 bits, in the metric's units  # doctest: +SKIP
    """
    from ..core.sensitivity import ReplayBatches, scan_layers, task_score
    from ..metrics import profile_macs
    from ..metrics.macs import count_macs_per_sample, first_sample
    from ..pruning.sensitivity import structured_edit, unstructured_edit
    from ..train.task import Task

    t0 = time.monotonic()
    task = task if task is not None else Task()
    batches = ReplayBatches(loader)  # read once; a user's metric may read loader.dataset
    samples = sum(len(b[1]) for b in batches)
    score = task_score(task, batches)
    example = first_sample(example_inputs)
    layers = _layers(model)
    names = [n for n, _ in layers]
    per_macs = {r.name: r.macs for r in profile_macs(model, example)}
    rows = {n: LayerSensitivity(n, type(m).__name__, m.weight.numel(), int(per_macs.get(n, 0)))
            for n, m in layers}  # fmt: skip

    def macs(m: nn.Module) -> int:
        return int(count_macs_per_sample(m, example))

    def scan(edit, settings, restore="state", record=None):
        return scan_layers(model, edit, settings, score=score, layers=names, restore=restore,
                           higher_is_better=lambda: task.higher_is_better, record=record)  # fmt: skip

    base = None
    if bits:
        result = scan(share_edit, tuple(bits))
        base = result
        for n in names:
            rows[n].bits = result.table(n)
    if sparsities:
        result = scan(unstructured_edit("magnitude"), tuple(float(s) for s in sparsities))
        base = base or result
        for n in names:
            rows[n].sparsity = result.table(n)
    if channels:
        edit = structured_edit(model, "l2", example_inputs, (nn.Conv2d, nn.Linear))
        result = scan(edit, tuple(float(c) for c in channels), "copy", macs)
        base = base or result
        for n in names:
            rows[n].channels = result.table(n)
            rows[n].channel_macs = {c: m for c, m in zip(result.settings, result.extras[n])
                                    if m is not None}  # fmt: skip
    if ranks:
        result = scan(_rank_edit(example), tuple(float(r) for r in ranks), "copy", macs)
        base = base or result
        for n in names:
            rows[n].rank = result.table(n)
            rows[n].rank_macs = {r: m for r, m in zip(result.settings, result.extras[n])
                                 if m is not None}  # fmt: skip
    baseline = base.baseline if base is not None else task_score(task, batches)(model.eval())
    return Sensitivity(baseline, macs(model), list(rows.values()), samples,
                       time.monotonic() - t0, task.headline, task.higher_is_better)  # fmt: skip


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


def _rank_edit(example: Any):
    """The scan edit that factorises one layer at a fraction of its MACs (``LowRank`` with
    ``rank="macs"``); "no change" for layers that cannot be factorised or gain nothing."""
    from ..core import compress_
    from ..lowrank import LowRank

    def edit(trial: nn.Module, name: str, ratio: float) -> bool:
        method = factorisation_method(trial.get_submodule(name))
        if method is None:
            return False
        config = LowRank(method=method, rank="macs", macs_ratio=ratio, layers=(name,))
        return bool(compress_(trial, config, example_inputs=example).summary.decomposed)

    return edit
