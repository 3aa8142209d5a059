"""What Wanda and SparseGPT share: config fields, the summary, and the layer-by-layer driver.

The driver (:func:`prune_layers`) plans everything first (which layers, their sparsity and N:M
pattern, whether the shapes fit), then walks the chosen layers in the order the model calls
them. With ``sequential=True`` (the papers' procedure) each layer's calibration statistics are
taken from the model *as already pruned* up to that layer, so later layers see, and compensate
for, the error of earlier ones; with ``sequential=False`` one pass of the dense model feeds
every layer. Each layer's result is a pruned weight matrix and a keep-mask; the mask is attached
with :func:`nnshrink.pruning.masks.attach_mask`, so fine-tuning keeps the zeros
(``MaskCallback``) and :func:`nnshrink.finalize` makes them permanent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from nnshrink.core import Config, ConfigError, LayerSelection

from ..masks import MASK_SUFFIX, attach_mask, matrix_to_weight, weight_matrix
from ..unstructured import PruningSummary, TensorSparsity, check_targets, resolve_target
from .calibration import calibration_batches, forward_order, run_batches
from .layers import is_candidate, unsupported_reason


@dataclasses.dataclass(frozen=True)
class OneShotPruning(Config, LayerSelection):
    """Fields shared by the one-shot pruning configs (:class:`Wanda`, :class:`SparseGPT`).

    Args:
        sparsity: fraction of each layer's weights to zero.
        pattern: ``None`` (unstructured) or ``"N:M"`` such as ``"2:4"`` (``N`` kept of every
            ``M`` consecutive weights along the input dimension; sparsity ``1 - N/M``).
        calibration_batches: at most this many batches of ``example_inputs`` are used.
        sequential: take each layer's statistics from the model pruned so far (the papers'
            way); ``False``: from one pass of the dense model (faster, usually a little worse).
        include: patterns of the layers to prune (default: every Linear, GPT-2 ``Conv1D`` and
            ``Conv2d``).
        exclude: layers to keep dense; default ``("@last",)`` keeps the output head dense, as
            both papers do (the LM head / classifier is the most sensitive layer).
        per_layer: ``{pattern: sparsity | {"sparsity": s, "pattern": "N:M" | None} | None}``.
    """

    amount_field: ClassVar[str | None] = "sparsity"

    sparsity: float = 0.5
    pattern: str | None = None
    calibration_batches: int = 32
    sequential: bool = True
    exclude: tuple[str, ...] = dataclasses.field(default=("@last",), kw_only=True)

    def validate(self) -> None:
        check_targets(self)
        if self.calibration_batches < 1:
            raise ConfigError(
                f"{self.kind}.calibration_batches must be >= 1, got {self.calibration_batches}"
            )


@dataclasses.dataclass(frozen=True)
class OneShotSummary(PruningSummary):
    """What Wanda / SparseGPT did: one row per pruned weight, plus what was skipped and why.

    Attributes:
        method: ``"wanda"`` or ``"sparsegpt"``.
        errors: ``{layer: relative squared output error on the calibration inputs}``, where the
            method knows it (SparseGPT: ``tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)`` with ``H = X Xᵀ``).
        skipped: ``(layer, reason)`` for selected layers left dense.
        batches: calibration batches used.
    """

    method: str = ""
    errors: dict[str, float] = dataclasses.field(default_factory=dict)
    skipped: tuple[tuple[str, str], ...] = ()
    batches: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(
            method=self.method,
            errors=dict(self.errors),
            skipped=[list(s) for s in self.skipped],
            batches=self.batches,
        )
        return out


@dataclasses.dataclass
class LayerJob:
    """One layer to prune: its name, module, target sparsity, N:M pattern (or ``None``), and
    whether ``per_layer`` gave it its own target (``own``: not pooled by a global ranking)."""

    name: str
    module: nn.Module
    sparsity: float
    nm: tuple[int, int] | None
    own: bool = False

    @property
    def prior_mask(self) -> torch.Tensor | None:
        """The layer's existing keep-mask as an ``(out, in)`` matrix (pruned weights stay so)."""
        mask = getattr(self.module, "weight" + MASK_SUFFIX, None)
        return None if mask is None else weight_matrix(self.module, mask)


@dataclasses.dataclass
class LayerResult:
    """A method's answer for one layer: the new ``(out, in)`` weights (``None``: unchanged but
    for the pruned entries), the ``(out, in)`` keep-mask and the relative error if known."""

    weight: torch.Tensor | None
    keep: torch.Tensor
    error: float | None = None


Stats = Any
MakeStats = Callable[[LayerJob], Stats]
Prune = Callable[[Sequence[tuple[LayerJob, Stats]]], list[LayerResult]]


def plan_jobs(
    model: nn.Module,
    config: OneShotPruning,
    filter_fn: Callable[[nn.Module, str], bool] | None,
) -> tuple[list[LayerJob], list[tuple[str, str]]]:
    """The layers to prune with their targets, and ``(name, reason)`` for those skipped.

    Raises :class:`~nnshrink.core.ConfigError` before anything is edited when a layer's input
    size does not fit its N:M pattern.
    """
    candidates = [(n, m) for n, m in model.named_modules() if is_candidate(m)]
    jobs, skipped = [], []
    weights: dict[int, str] = {}
    for layer in config.select(candidates, filter_fn=filter_fn, amount_field="sparsity"):
        reason = unsupported_reason(layer.module)
        if reason is None and id(layer.module.weight) in weights:
            reason = f"shares its weight with {weights[id(layer.module.weight)]}"
        if reason is not None:
            skipped.append((layer.name, reason))
            continue
        weights[id(layer.module.weight)] = layer.name
        own = {k: v for k, v in layer.overrides.items() if k in ("sparsity", "pattern")}
        sparsity, nm = resolve_target(config.kind, layer.name, config.sparsity, config.pattern, own)
        cols = weight_matrix(layer.module).shape[1]
        if nm is not None and cols % nm[1]:
            raise ConfigError(
                f"{config.kind}: layer {layer.name!r} has {cols} inputs, not a multiple of "
                f"{nm[1]} for pattern {nm[0]}:{nm[1]}; exclude it (exclude=[{layer.name!r}]) or "
                f"give it per_layer={{{layer.name!r}: {{'pattern': None}}}}"
            )
        if sparsity > 0.0:
            jobs.append(LayerJob(layer.name, layer.module, sparsity, nm, own=bool(own)))
    return jobs, skipped


def prune_layers(
    model: nn.Module,
    config: OneShotPruning,
    example_inputs: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None,
    make_stats: MakeStats,
    prune: Prune,
) -> OneShotSummary:
    """Run a one-shot method over the model's chosen layers in forward order (see module doc).

    Args:
        model: edited in place (weights zeroed/updated, masks attached).
        config: the method's config.
        example_inputs: calibration data (see
            :func:`~nnshrink.pruning.oneshot.calibration.calibration_batches`).
        filter_fn: ``compress_``'s filter.
        make_stats: ``fn(job) -> stats`` with ``stats.add(layer_input)``.
        prune: ``fn([(job, stats), ...]) -> [LayerResult, ...]``: one layer at a time when
            sequential, all layers together otherwise.
    """
    batches = calibration_batches(example_inputs, config.calibration_batches, kind=config.kind)
    jobs, skipped = plan_jobs(model, config, filter_fn)
    if not jobs:
        raise ValueError(
            f"{config.kind}: no layer to prune (looked for Linear, GPT-2 Conv1D and Conv2d layers "
            f"not excluded by include/exclude/per_layer/filter_fn; exclude={list(config.exclude)}"
            f"{'; skipped: ' + str(skipped) if skipped else ''})"
        )
    order = {
        id(m): i for i, m in enumerate(forward_order(model, batches[0], [j.module for j in jobs]))
    }
    skipped += [
        (j.name, "not called on the calibration data") for j in jobs if id(j.module) not in order
    ]
    jobs = sorted((j for j in jobs if id(j.module) in order), key=lambda j: order[id(j.module)])
    rows: dict[str, TensorSparsity] = {}
    errors: dict[str, float] = {}

    def commit(job: LayerJob, result: LayerResult) -> None:
        module = job.module
        with torch.no_grad():
            if result.weight is not None:
                module.weight.copy_(matrix_to_weight(module, result.weight.to(module.weight.dtype)))
        keep = matrix_to_weight(module, result.keep)
        attach_mask(module, "weight", keep)
        key = f"{job.name}.weight" if job.name else "weight"
        rows[key] = TensorSparsity(key, keep.numel(), int(keep.sum()), job.sparsity)
        if result.error is not None:
            errors[job.name] = result.error

    if config.sequential:
        for job in jobs:
            stats = make_stats(job)
            run_batches(model, batches, {job.module: stats.add}, stop_at=job.module)
            commit(job, prune([(job, stats)])[0])
    else:
        pairs = [(job, make_stats(job)) for job in jobs]
        run_batches(model, batches, {job.module: stats.add for job, stats in pairs})
        for (job, _), result in zip(pairs, prune(pairs)):
            commit(job, result)
    return OneShotSummary(
        tuple(rows.values()),
        method=config.kind,
        errors=errors,
        skipped=tuple(skipped),
        batches=len(batches),
    )
