"""Channel-importance criteria: pure functions from weights (and grads) to one score per channel.

Every function takes a tensor and the axis that indexes channels (``dim``) and returns a float64
vector with one score per channel; a higher score means "more important, keep". They know nothing
about modules or groups (``nnshrink.pruning.structured.group`` aggregates them over coupled layers).

Example:
    >>> w = torch.tensor([[1.0, -2.0], [0.5, 0.5]])
    >>> l1(w).tolist()
    [3.0, 1.0]
"""

from __future__ import annotations

import torch

__all__ = ["CRITERIA", "activation", "bn_scale", "fpgm", "l1", "l2", "random", "taylor"]

CRITERIA = ("l1", "l2", "bn_scale", "taylor", "fpgm", "activation", "random")


def _per_channel(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Return ``tensor`` as a (channels, rest) float64 matrix."""
    t = tensor.detach().to(torch.float64)
    if t.dim() == 0:
        raise ValueError("criteria need a tensor with a channel axis, got a scalar")
    return t.movedim(dim, 0).reshape(t.shape[dim], -1)


def l1(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Sum of absolute values per channel (Li et al. 2017, 'Pruning Filters').

    Args:
        weight: any tensor, e.g. a conv weight (out, in, kh, kw).
        dim: the channel axis (0 = output channels, 1 = input channels).

    Example:
        >>> l1(torch.tensor([[1.0, -1.0], [0.0, 3.0]]), dim=1).tolist()
        [1.0, 4.0]
    """
    return _per_channel(weight, dim).abs().sum(dim=1)


def l2(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Euclidean norm per channel.

    Example:
        >>> l2(torch.tensor([[3.0, 4.0]])).tolist()
        [5.0]
    """
    return _per_channel(weight, dim).pow(2).sum(dim=1).sqrt()


def bn_scale(gamma: torch.Tensor) -> torch.Tensor:
    """``|gamma|`` of a normalization layer (Liu et al. 2017, 'Network Slimming').

    Example:
        >>> bn_scale(torch.tensor([-0.5, 2.0])).tolist()
        [0.5, 2.0]
    """
    return gamma.detach().to(torch.float64).abs().reshape(-1)


def taylor(weight: torch.Tensor, grad: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """First-order Taylor importance: ``sum |w * dL/dw|`` per channel (Molchanov et al.).

    Args:
        weight: the parameter.
        grad: its gradient (same shape), e.g. ``weight.grad`` after ``loss.backward()``.
        dim: the channel axis.

    Example:
        >>> taylor(torch.tensor([[1.0, -2.0]]), torch.tensor([[3.0, 1.0]])).tolist()
        [5.0]
    """
    if grad is None:
        raise ValueError("taylor needs gradients: run loss.backward() on a batch before pruning")
    if grad.shape != weight.shape:
        raise ValueError(f"grad shape {tuple(grad.shape)} != weight shape {tuple(weight.shape)}")
    return (_per_channel(weight, dim) * _per_channel(grad, dim)).abs().sum(dim=1)


def fpgm(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Filter Pruning via Geometric Median (He et al. 2019): summed distance to the other filters.

    Filters close to the geometric median are the most replaceable, so they get the lowest score.

    Example:
        >>> fpgm(torch.tensor([[0.0], [1.0], [3.0]])).tolist()
        [4.0, 3.0, 5.0]
    """
    flat = _per_channel(weight, dim)
    return torch.cdist(flat, flat).sum(dim=1)


def random(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` uniform random scores from a private generator (a baseline; reproducible by ``seed``).

    Example:
        >>> bool((random(4, seed=1) == random(4, seed=1)).all())
        True
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=gen, dtype=torch.float64)


def activation(weight_sq: torch.Tensor, input_sq: torch.Tensor) -> torch.Tensor:
    """Per-input importance ``||W[:, j]||² · ||X_j||²`` of a consumer layer (squared).

    ``weight_sq[j]`` is the squared norm of the weights that read input ``j`` and
    ``input_sq[j]`` the sum of ``x_j²`` over calibration rows: under a diagonal approximation
    their product is the energy input ``j`` contributes to the layer's output, so a channel
    whose activations are small (or always zero, after a ReLU) scores low however large its
    weights. The structured form of Wanda (Sun et al. 2024; FLAP, An et al. 2024 use the same
    product). A group sums it over its consumers and takes the square root.

    Example:
        >>> activation(torch.tensor([4.0, 1.0]), torch.tensor([0.0, 9.0])).tolist()
        [0.0, 9.0]
    """
    if weight_sq.shape != input_sq.shape:
        raise ValueError(f"weight {tuple(weight_sq.shape)} and input {tuple(input_sq.shape)} "
                         "statistics differ in shape")  # fmt: skip
    return weight_sq.to(torch.float64) * input_sq.to(torch.float64)
