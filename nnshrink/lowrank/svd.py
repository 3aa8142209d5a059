"""Truncated SVD of Linear layers: ``W ≈ U_r S_r V_r^T`` as two stacked Linear layers.

By Eckart–Young the rank-``r`` truncation is the best rank-``r`` approximation in Frobenius norm.
``S_r`` is split as ``sqrt(S_r)`` on both sides so the two factors have equal scale, which keeps
their gradients balanced when the result is fine-tuned.
"""

from __future__ import annotations

import torch
from torch import nn


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor ``weight`` (out x in) into ``A`` (out x r) and ``B`` (r x in) with ``A @ B`` the best
    rank-``r`` approximation; computed in float64, returned in ``weight``'s dtype.

    Args:
        weight: a 2-D tensor.
        rank: 1 <= rank <= min(weight.shape).

    Example:
        >>> a, b = svd_factors(torch.eye(4), 2); (a @ b).shape
        torch.Size([4, 4])
    """
    if weight.ndim != 2:
        raise ValueError(f"svd_factors expects a 2-D weight, got shape {tuple(weight.shape)}")
    full = min(weight.shape)
    if not 1 <= rank <= full:
        raise ValueError(
            f"rank must be in [1, {full}] for a {tuple(weight.shape)} weight, got {rank}"
        )
    u, s, vh = torch.linalg.svd(weight.detach().to(torch.float64), full_matrices=False)
    root = s[:rank].sqrt()
    a = u[:, :rank] * root
    b = root[:, None] * vh[:rank]
    return a.to(weight.dtype), b.to(weight.dtype)


def svd_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Replace ``linear`` by ``Sequential(Linear(in, r, bias=False), Linear(r, out, bias))``.

    Args:
        linear: the layer to factor (left unchanged).
        rank: kept rank ``r``.

    Example:
        >>> m = svd_linear(nn.Linear(784, 300), 32); [tuple(l.weight.shape) for l in m]
        [(32, 784), (300, 32)]
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"svd_linear expects nn.Linear, got {type(linear).__name__}")
    a, b = svd_factors(linear.weight, rank)
    weight = linear.weight
    first = nn.Linear(
        linear.in_features, rank, bias=False, device=weight.device, dtype=weight.dtype
    )
    second = nn.Linear(
        rank,
        linear.out_features,
        bias=linear.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        first.weight.copy_(b)
        second.weight.copy_(a)
        if linear.bias is not None:
            second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


def svd_macs(in_features: int, out_features: int, rank: int, tokens: int = 1) -> int:
    """MACs of the factored layer for ``tokens`` input rows (dense: ``tokens * in * out``)."""
    return tokens * rank * (in_features + out_features)


def svd_params(in_features: int, out_features: int, rank: int, bias: bool) -> int:
    """Parameters of the factored layer."""
    return rank * (in_features + out_features) + (out_features if bias else 0)
