"""Network slimming (Liu et al. 2017): an L1 penalty on BN scales, then ``criterion="bn_scale"``.

Example:
    >>> bn = nn.BatchNorm1d(2); bn.weight.data = torch.tensor([0.5, -2.0])
    >>> bn.weight.grad = torch.zeros(2); bn_l1_penalty(bn, 0.1); bn.weight.grad.tolist()
    1
    [0.10000000149011612, -0.10000000149011612]
"""

from __future__ import annotations

import torch
from torch import nn

from nnshrink.train import Callback

__all__ = ["BNSlimmingCallback", "bn_l1_penalty"]


def bn_l1_penalty(model: nn.Module, strength: float) -> int:
    """Add the network-slimming L1 subgradient ``strength * sign(gamma)`` to every BN weight grad.

    Call it between ``loss.backward()`` and ``optimizer.step()`` (e.g. from a training callback's
    ``on_after_backward``); then prune with ``criterion="bn_scale"``.

    Args:
        model: the model being trained.
        strength: the L1 coefficient (1e-5 to 1e-4 in Liu et al. 2017).

    Returns:
        Number of BN weights penalised.

    Example:
        >>> bn = nn.BatchNorm1d(1); bn.weight.grad = torch.zeros(1); bn_l1_penalty(bn, 0.5)
        1
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            weight = module.weight
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            weight.grad.add_(torch.sign(weight.detach()), alpha=strength)
            count += 1
    return count


class BNSlimmingCallback(Callback):
    """Training callback applying :func:`bn_l1_penalty` after every backward pass.

    Args:
        strength: the L1 coefficient on BN scales.

    Example:
        >>> from nnshrink.train import fit  # doctest: +SKIP
        >>> fit(model, loader, epochs=10, callbacks=[BNSlimmingCallback(1e-4)])  # doctest: +SKIP
    """

    def __init__(self, strength: float = 1e-4) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.strength = strength

    def on_after_backward(self, model: nn.Module) -> None:
        bn_l1_penalty(model, self.strength)
