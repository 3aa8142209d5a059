"""Activation-aware SVD of Linear layers: truncate ``W T`` instead of ``W``, then undo ``T``.

Plain truncated SVD minimises ``||W - W'||_F``, treating every input feature alike. What matters
is the layer's output ``W x`` on real inputs, and LLM activations are far from isotropic (a few
features carry most of the magnitude, features are correlated). Both methods here factor
``W T ≈ U_r Σ_r V_rᵀ`` for an invertible ``T`` built from calibration inputs and return
``W' = U_r Σ_r V_rᵀ T⁻¹``, still two Linear layers of rank ``r``:

* **ASVD** (Yuan et al. 2023, arXiv 2312.05821): ``T = diag(s)``, ``s_j = mean_t |x_tj| ** α``
  (``α = 0.5`` in the paper), so input features with large activations are approximated better.
* **SVD-LLM** (Wang et al., ICLR 2025, arXiv 2403.07378): ``T = L``, the Cholesky factor of
  ``X Xᵀ = L Lᵀ`` ("truncation-aware data whitening"). Then ``||(W - W') X||_F² = ||(W - W') L||_F²``
  and Eckart–Young applies to ``W L``: the truncation is the best rank-``r`` approximation in
  *output* error, and that error is exactly the sum of the discarded ``σ_i²`` of ``W L``.

Everything is computed in float64. ``X Xᵀ`` that is singular (fewer calibration rows than
features, dead features) gets the smallest dampening that makes the Cholesky factorisation
succeed.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import nn

Whitening = Literal["none", "asvd", "svd-llm"]
WHITENINGS = ("none", "asvd", "svd-llm")


class InputStatistics:
    """Running statistics of a Linear layer's inputs: ``sum |x|``, ``X Xᵀ`` and the row count."""

    def __init__(self, in_features: int) -> None:
        self.in_features = in_features
        self.abs_sum: torch.Tensor | None = None
        self.gram: torch.Tensor | None = None
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        """Accumulate one call's input (any leading dimensions; the last is the feature)."""
        rows = x.detach().reshape(-1, self.in_features).to(torch.float64)
        abs_sum, gram = rows.abs().sum(dim=0), rows.T @ rows
        self.abs_sum = abs_sum if self.abs_sum is None else self.abs_sum + abs_sum
        self.gram = gram if self.gram is None else self.gram + gram
        self.rows += rows.shape[0]

    @property
    def mean_abs(self) -> torch.Tensor:
        """``mean_t |x_tj|`` per input feature."""
        if self.abs_sum is None:
            raise RuntimeError("no calibration input was observed for this layer")
        return self.abs_sum / self.rows


@dataclasses.dataclass
class Whitener:
    """An invertible input transform ``T``: a diagonal ``scale`` (ASVD) or a lower-triangular
    ``chol`` (SVD-LLM)."""

    method: str
    scale: torch.Tensor | None = None
    chol: torch.Tensor | None = None

    def apply(self, weight: torch.Tensor) -> torch.Tensor:
        """``W T`` (float64)."""
        w = weight.detach().to(torch.float64)
        if self.scale is not None:
            return w * self.scale.to(w.device)[None, :]
        return w @ self.chol.to(w.device)

    def undo(self, matrix: torch.Tensor) -> torch.Tensor:
        """``M T⁻¹`` for a ``(r, in)`` matrix (a triangular solve for SVD-LLM)."""
        if self.scale is not None:
            return matrix / self.scale.to(matrix.device)[None, :]
        chol = self.chol.to(matrix.device)
        # M L^-1 = (L^-T M^T)^T, and L^T is upper triangular
        return torch.linalg.solve_triangular(chol.T, matrix.T, upper=True).T


def asvd_whitener(stats: InputStatistics, alpha: float = 0.5) -> Whitener:
    """ASVD's ``T = diag(mean|x| ** alpha)``; features never active get the smallest positive scale.

    Example:
        >>> stats = InputStatistics(2); stats.add(torch.tensor([[4.0, 1.0], [4.0, -1.0]]))
        >>> asvd_whitener(stats).scale.tolist()
        [2.0, 1.0]
    """
    scale = stats.mean_abs**alpha
    positive = scale[scale > 0]
    floor = float(positive.min()) if positive.numel() else 1.0
    return Whitener("asvd", scale=torch.where(scale > 0, scale, torch.full_like(scale, floor)))


def svdllm_whitener(stats: InputStatistics) -> Whitener:
    """SVD-LLM's ``T = L`` with ``X Xᵀ = L Lᵀ`` (dampened only if the factorisation needs it).

    Example:
        >>> stats = InputStatistics(2); stats.add(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        >>> svdllm_whitener(stats).chol.tolist()
        [[1.0, 0.0], [0.0, 2.0]]
    """
    if stats.gram is None:
        raise RuntimeError("no calibration input was observed for this layer")
    return Whitener("svd-llm", chol=cholesky_with_damping(stats.gram))


def cholesky_with_damping(gram: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of a PSD matrix, adding ``10^k * mean(diag)`` (k = -12 .. -1) to the
    diagonal only when the plain factorisation fails."""
    gram = gram.to(torch.float64)
    mean = float(torch.diagonal(gram).mean()) or 1.0
    for damp in (0.0, *(10.0**k for k in range(-12, 0))):
        chol, info = torch.linalg.cholesky_ex(
            gram + damp * mean * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        )
        if int(info) == 0:
            return chol
    raise ValueError(
        "the calibration inputs' X Xᵀ is not positive semi-definite (NaN or inf inputs?)"
    )


def whitener_for(method: Whitening, stats: InputStatistics, alpha: float = 0.5) -> Whitener:
    """The :class:`Whitener` of ``method`` (``"asvd"`` or ``"svd-llm"``) from ``stats``."""
    if method == "asvd":
        return asvd_whitener(stats, alpha)
    if method == "svd-llm":
        return svdllm_whitener(stats)
    raise ValueError(f"whitening must be 'asvd' or 'svd-llm' here, got {method!r}")


def whitened_svd_factors(
    weight: torch.Tensor, rank: int, whitener: Whitener
) -> tuple[torch.Tensor, torch.Tensor]:
    """``A`` (out x r) and ``B`` (r x in) with ``A @ B = U_r Σ_r V_rᵀ T⁻¹`` for ``W T = U Σ Vᵀ``.

    ``Σ_r`` is split as ``sqrt`` on both sides, as :func:`nnshrink.lowrank.svd.svd_factors` does.
    Returned in ``weight``'s dtype.

    Example:
        >>> stats = InputStatistics(4); stats.add(torch.randn(32, 4))
        >>> a, b = whitened_svd_factors(torch.randn(3, 4), 2, svdllm_whitener(stats))
        >>> a.shape, b.shape
        (torch.Size([3, 2]), torch.Size([2, 4]))
    """
    full = min(weight.shape)
    if not 1 <= rank <= full:
        raise ValueError(
            f"rank must be in [1, {full}] for a {tuple(weight.shape)} weight, got {rank}"
        )
    u, s, vh = torch.linalg.svd(whitener.apply(weight), full_matrices=False)
    root = s[:rank].sqrt()
    a = u[:, :rank] * root
    b = whitener.undo(root[:, None] * vh[:rank])
    return a.to(weight.dtype), b.to(weight.dtype)


def whitened_svd_linear(linear: nn.Linear, rank: int, whitener: Whitener) -> nn.Sequential:
    """``Sequential(Linear(in, r, bias=False), Linear(r, out, bias))`` from the whitened SVD.

    Example:
        >>> stats = InputStatistics(8); stats.add(torch.randn(64, 8))
        >>> m = whitened_svd_linear(nn.Linear(8, 6), 3, asvd_whitener(stats))
        >>> [tuple(layer.weight.shape) for layer in m]
        [(3, 8), (6, 3)]
    """
    a, b = whitened_svd_factors(linear.weight, rank, whitener)
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


def output_error(weight: torch.Tensor, approx: torch.Tensor, gram: torch.Tensor) -> float:
    """Relative output error ``||(W - W') X||_F / ||W X||_F`` from ``X Xᵀ``.

    Example:
        >>> output_error(torch.eye(2), torch.zeros(2, 2), torch.eye(2))
        1.0
    """
    w = weight.detach().to(torch.float64)
    delta = w - approx.detach().to(w.device, torch.float64)
    gram = gram.to(w.device, torch.float64)
    num = float(((delta @ gram) * delta).sum())
    den = float(((w @ gram) * w).sum())
    return (max(num, 0.0) / den) ** 0.5 if den > 0 else 0.0
