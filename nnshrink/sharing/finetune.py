"""Centroid fine-tuning after k-means weight sharing, with settings that keep the model intact.

A shared layer's codebook entry receives the *sum* of its members' gradients (Deep Compression,
section 3.2): on LeNet-300-100's first layer at 4 bits that is ~15,000 weights per centroid. An
SGD step at a learning rate chosen for single weights (0.01, with weight decay) then moves every
centroid thousands of times too far, and top-1 collapses (measured 0.89 -> 0.09 through the old
CLI default). Adam normalises each centroid's step by its own gradient scale, so a small rate
works for any cluster size; no weight decay (it would pull the shared values towards zero).
``benchmarks/kmeans_bits_lenet300.py`` measures these defaults.

Example:
    >>> import nnshrink as ns
    >>> from nnshrink.data import TensorLoader
    >>> model = ns.models.create("lenet300")
    >>> _ = ns.compress_(model, ns.WeightSharing(bits=4))
    >>> data = TensorLoader(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)), 32)
    >>> len(finetune_shared(model, data, epochs=1).epochs)
    1
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..core import transaction
from ..train import Callback, History, KeepZeros, fit
from .layers import is_shared

#: Learning rate of centroid fine-tuning (Adam; scale-free per centroid).
FINETUNE_LR = 1e-4
#: Optimizer of centroid fine-tuning.
FINETUNE_OPTIMIZER = "adam"

__all__ = ["FINETUNE_LR", "FINETUNE_OPTIMIZER", "finetune_shared"]


def finetune_shared(
    model: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int = 1,
    lr: float | None = None,
    optimizer: str = FINETUNE_OPTIMIZER,
    schedule: str = "cosine",
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    progress: bool = False,
) -> History:
    """Fine-tune the codebooks (and the other parameters) of a model with shared-weight layers.

    Indices never change and pruned weights stay zero: shared layers keep their masks, and the
    weights of plain ``nn.Linear``/``nn.Conv2d`` layers that are exactly zero are kept at zero
    (:class:`nnshrink.train.KeepZeros`), so a pruned-then-shared model stays pruned. No weight
    decay. All or nothing: if training fails (a non-finite loss), the model is restored.

    Args:
        model: a model after ``compress_(model, WeightSharing(...))``, edited in place.
        train_loader: ``(x, y)`` batches.
        epochs: fine-tuning epochs (Deep Compression: until the accuracy recovers; 1 is enough
            at 4+ bits on LeNet-300-100).
        lr: peak learning rate; ``None`` = :data:`FINETUNE_LR` (1e-4 with Adam).
        optimizer: ``"adam"`` (default) or ``"adamw"``/``"sgd"`` for experiments; with SGD divide
            the rate by the typical cluster size.
        schedule: learning-rate schedule of :func:`nnshrink.train.fit`.
        callbacks: more :class:`nnshrink.train.Callback` s (e.g. a distiller's).
        seed: training seed.
        progress: progress bar.

    Returns:
        The :class:`nnshrink.train.History` of the run.
    """
    if not any(is_shared(m) for m in model.modules()):
        raise ValueError(
            "finetune_shared: the model has no shared-weight layer; apply "
            "compress_(model, WeightSharing(bits=...)) first"
        )
    with transaction(model):
        return fit(
            model,
            train_loader,
            epochs=epochs,
            lr=FINETUNE_LR if lr is None else lr,
            optimizer=optimizer,
            weight_decay=0.0,
            schedule=schedule,
            callbacks=[KeepZeros(), *callbacks],
            seed=seed,
            progress=progress,
        )
