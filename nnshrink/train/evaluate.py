"""Accuracy and loss of a model on a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Criterion = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def is_class_batch(logits: Any, targets: Any) -> bool:
    """Whether ``(logits, targets)`` look like classification: ``(N, C)`` and integer ``(N,)``."""
    return (
        isinstance(logits, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and logits.dim() == 2
        and targets.dim() == 1
        and not targets.is_floating_point()
    )


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
    from ..core.modules import model_device, to_device

    criterion = criterion or default_criterion
    was_training = model.training
    model.eval()
    device = model_device(model)
    correct1 = correct5 = samples = 0
    loss_sum = 0.0
    try:
        for x, y in loader:
            x, y = to_device(x, device), to_device(y, device)
            loss, logits = criterion(model, x, y)
            if not is_class_batch(logits, y):
                raise ValueError(
                    "evaluate computes top-1 for classifiers (logits (N, C) and integer labels); "
                    "for another task pass a metric (Python: Task(metric=fn); CLI: --metric "
                    "package.module:fn)"
                )
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
