"""Accuracy and loss of a model on a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Criterion = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def default_criterion(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Cross-entropy on ``model(x)``; returns ``(loss, logits)``."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    criterion: Criterion | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (fractions in [0, 1]) and mean cross-entropy over a loader.

    The model is put in eval mode for the pass and restored afterwards.

    Args:
        model: the classifier.
        loader: iterable of ``(inputs, labels)`` batches.
        criterion: ``(model, x, y) -> (loss, logits)``; default cross-entropy.

    Example:
        >>> evaluate(model, loader("mnist", "test"))  # doctest: +SKIP
        {'top1': 0.991, 'top5': 1.0, 'loss': 0.03, 'samples': 10000}
    """
    criterion = criterion or default_criterion
    was_training = model.training
    model.eval()
    correct1 = correct5 = samples = 0
    loss_sum = 0.0
    try:
        for x, y in loader:
            loss, logits = criterion(model, x, y)
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hits = top == y[:, None]
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            loss_sum += float(loss) * len(y)
            samples += len(y)
    finally:
        model.train(was_training)
    if samples == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return {
        "top1": correct1 / samples,
        "top5": correct5 / samples,
        "loss": loss_sum / samples,
        "samples": samples,
    }
