"""Callbacks: how techniques hook into a training loop without owning it.

A technique that must act during training (keep pruned weights at zero, add the network-slimming
L1 penalty, step a sparsity schedule) ships a :class:`Callback`. Our :func:`~nnshrink.train.fit`
calls them; users with their own loop call the same methods at the same points.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Callback:
    """Base class; override any hook. All hooks are optional no-ops.

    Call order per step in :func:`~nnshrink.train.fit`: forward, loss, ``backward()``,
    :meth:`on_after_backward`, ``optimizer.step()``, :meth:`on_step_end`.

    Example:
        >>> class ZeroBias(Callback):
        ...     def on_step_end(self, model, step):
        ...         for m in model.modules():
        ...             if isinstance(m, nn.Linear) and m.bias is not None:
        ...                 m.bias.data.zero_()
    """

    def on_train_begin(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first epoch."""

    def on_epoch_begin(self, model: nn.Module, epoch: int) -> None:
        """Called at the start of every epoch (0-based)."""

    def on_after_backward(self, model: nn.Module) -> None:
        """Called after ``loss.backward()`` and before ``optimizer.step()``: edit gradients here."""

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """Called after ``optimizer.step()``; ``step`` counts optimizer steps from 0."""

    def on_epoch_end(self, model: nn.Module, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after each epoch with that epoch's metrics (train loss, validation top-1, ...)."""

    def on_train_end(self, model: nn.Module) -> None:
        """Called once after the last epoch."""


class KeepZeros(Callback):
    """Keep weights that are exactly zero at the start of training at zero.

    Fine-tuning after unstructured pruning must not revive pruned weights: gradients of zeroed
    entries are cleared before the step (so momentum never builds up) and the zeros are written
    back after it (weight decay and Adam could otherwise move them).

    Args:
        types: module types whose ``weight`` is protected.

    Example:
        >>> fit(model, loader, epochs=1, callbacks=[KeepZeros()])  # doctest: +SKIP
    """

    def __init__(self, types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)) -> None:
        self.types = types
        self.masks: dict[str, torch.Tensor] = {}

    def on_train_begin(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.masks = {}
        for name, module in model.named_modules():
            weight = getattr(module, "weight", None)
            if isinstance(module, self.types) and isinstance(weight, torch.Tensor):
                if bool((weight == 0).any()):
                    self.masks[name] = weight.detach() != 0

    def _modules(self, model: nn.Module):
        modules = dict(model.named_modules())
        for name, mask in self.masks.items():
            yield modules[name], mask

    def on_after_backward(self, model: nn.Module) -> None:
        for module, mask in self._modules(model):
            if module.weight.grad is not None:
                module.weight.grad.mul_(mask)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        with torch.no_grad():
            for module, mask in self._modules(model):
                module.weight.mul_(mask)
