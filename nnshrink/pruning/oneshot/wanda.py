"""Wanda: prune by weight magnitude times input-activation norm (Sun, Liu, Bair, Kolter 2023).

"A Simple and Effective Pruning Approach for Large Language Models" (arXiv 2306.11695) scores
each weight by ``|W_ij| * ||X_j||_2``: a small weight on an input feature with large activations
(the outlier features of LLMs) can matter more than a large weight on a quiet one. Weights are
compared within each output row by default (the paper's per-output comparison group; one ranking
per layer was much worse for LLaMA), nothing is updated, and one pass of calibration data is
enough. ``group="layer"`` ranks each layer's scores together instead, as magnitude pruning's
``scope="layer"`` does; the paper's ablation chose between the two on held-out perplexity.

The paper's numbers (LLaMA-7B, 50 % unstructured, WikiText-2 perplexity, 128 C4 sequences of
2048 tokens): dense 5.68, magnitude 17.29, SparseGPT 7.22, Wanda 7.26; 2:4: magnitude 42.13,
SparseGPT 11.00, Wanda 11.53.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nnshrink.core import ConfigError, register_handler

from ..masks import (
    global_masks,
    mask_from_scores,
    nm_mask_from_scores,
    row_mask_from_scores,
    weight_matrix,
)
from .base import LayerJob, LayerResult, OneShotPruning, OneShotSummary, prune_layers
from .layers import input_rows


@dataclasses.dataclass(frozen=True)
class Wanda(OneShotPruning):
    """One-shot pruning by ``|W_ij| * ||X_j||_2`` (Wanda), unstructured or N:M; no weight update.

    Needs calibration data as ``example_inputs`` (a tensor, a list of batches, or a loader of
    ``(x, y)``; dicts of keyword inputs for Hugging Face models). The output head stays dense
    by default (``exclude=("@last",)``).

    Args:
        sparsity: fraction of each layer's weights to zero (default 0.5).
        pattern: ``None`` or ``"N:M"`` (e.g. ``"2:4"``): keep the ``N`` highest scores of every
            ``M`` consecutive inputs.
        scope: ``"layer"``: every layer pruned to ``sparsity``, weights ranked within the
            comparison ``group``. ``"global"``: one ranking of the scores over all chosen layers
            (needs ``sequential=False``; layers end up unequally sparse).
        group: the comparison group within a layer when ``scope="layer"``: ``"row"`` (default,
            the paper's per-output group: every output keeps the same number of weights) or
            ``"layer"`` (one ranking over the layer's whole weight matrix).
        calibration_batches: at most this many calibration batches are used (default 32).
        sequential: statistics of each layer from the model pruned so far (default, as the
            paper's code); ``False``: one pass of the dense model.
        include / exclude / per_layer: which layers, as everywhere (``per_layer`` values set
            ``sparsity``, or a mapping with ``sparsity`` and ``pattern``).

    Example:
        >>> import torch, nnshrink as ns
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> result = ns.compress_(model, Wanda(sparsity=0.5), example_inputs=torch.randn(64, 16))
        >>> result.summary.sparsity, int((model[2].weight == 0).sum())
        (0.5, 0)
    """

    kind: ClassVar[str] = "wanda"
    scope: Literal["layer", "global"] = "layer"
    group: Literal["row", "layer"] = "row"

    def validate(self) -> None:
        super().validate()
        if self.scope not in ("layer", "global"):
            raise ConfigError(f"wanda.scope must be 'layer' or 'global', not {self.scope!r}")
        if self.group not in ("row", "layer"):
            raise ConfigError(f"wanda.group must be 'row' or 'layer', not {self.group!r}")
        if self.group == "layer" and (self.scope == "global" or self.pattern is not None):
            raise ConfigError(
                "wanda: group='layer' chooses the comparison group within each layer; "
                "scope='global' ranks all layers together and an N:M pattern ranks each block of "
                "M inputs, so neither uses it: leave group='row'"
            )
        if self.scope == "global" and self.sequential:
            raise ConfigError(
                "wanda: scope='global' ranks all layers' scores together, so they must come from "
                "one pass: set sequential=False (or use scope='layer')"
            )
        if self.scope == "global" and self.pattern is not None:
            raise ConfigError(
                "wanda: an N:M pattern fixes every group's sparsity, so scope='global' has "
                "nothing to rank; use scope='layer'"
            )


class InputNorms:
    """Running ``sum_t x_tj^2`` over the calibration rows of one layer (float64)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.sq: torch.Tensor | None = None
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        rows = input_rows(self.module, x).to(torch.float64)
        part = (rows * rows).sum(dim=0)
        self.sq = part if self.sq is None else self.sq + part
        self.rows += rows.shape[0]

    @property
    def norms(self) -> torch.Tensor:
        """``||X_j||_2`` per input column."""
        if self.sq is None:
            raise RuntimeError("no calibration input was observed for this layer")
        return self.sq.sqrt()


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """``|W_ij| * ||X_j||_2`` for an ``(out, in)`` weight and per-input norms ``(in,)``.

    Example:
        >>> wanda_scores(torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 0.5]))
        tensor([[3., 1.]], dtype=torch.float64)
    """
    if weight.ndim != 2 or norms.shape != (weight.shape[1],):
        raise ValueError(
            f"wanda_scores needs an (out, in) weight and (in,) norms, got {tuple(weight.shape)} "
            f"and {tuple(norms.shape)}"
        )
    return weight.detach().abs().to(torch.float64) * norms.to(weight.device, torch.float64)[None, :]


def wanda_mask(
    scores: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    group: str = "row",
) -> torch.Tensor:
    """Keep-mask from Wanda scores: per output row, per layer, or N:M along the inputs.

    Args:
        scores: ``(out, in)`` scores from :func:`wanda_scores`.
        sparsity: fraction to prune (ignored with ``nm``).
        nm: ``(N, M)``: keep the ``N`` highest of every ``M`` consecutive inputs.
        group: ``"row"``: the same fraction of every row; ``"layer"``: one ranking of all scores.

    Example:
        >>> s = torch.tensor([[3.0, 1.0], [2.0, 4.0]])
        >>> wanda_mask(s, 0.5).tolist(), wanda_mask(s, 0.5, group="layer").tolist()
        ([[True, False], [False, True]], [[True, False], [False, True]])
        >>> wanda_mask(torch.tensor([[3.0, 4.0], [1.0, 2.0]]), 0.5, group="layer").tolist()
        [[True, True], [False, False]]
    """
    if nm is not None:
        return nm_mask_from_scores(scores, *nm)
    if group == "layer":
        return mask_from_scores(scores, sparsity)
    return row_mask_from_scores(scores, sparsity)


def _prune(config: Wanda, pairs: Sequence[tuple[LayerJob, InputNorms]]) -> list[LayerResult]:
    scores = {}
    for job, stats in pairs:
        score = wanda_scores(weight_matrix(job.module), stats.norms)
        prior = job.prior_mask
        if prior is not None:  # already pruned weights stay pruned: rank them first
            score = score.masked_fill(~prior, float("-inf"))
        scores[job.name] = score
    pooled = [job.name for job, _ in pairs if config.scope == "global" and not job.own]
    masks = global_masks({name: scores[name] for name in pooled}, config.sparsity) if pooled else {}
    for job, _ in pairs:
        if job.name not in masks:
            masks[job.name] = wanda_mask(scores[job.name], job.sparsity, job.nm, config.group)
    out = []
    for job, _ in pairs:
        keep = masks[job.name]
        if job.prior_mask is not None:
            keep = keep & job.prior_mask
        out.append(LayerResult(None, keep))
    return out


@register_handler(Wanda)
def _apply(
    model: nn.Module,
    config: Wanda,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> OneShotSummary:
    return prune_layers(
        model,
        config,
        example_inputs,
        filter_fn,
        lambda job: InputNorms(job.module),
        lambda pairs: _prune(config, pairs),
    )
