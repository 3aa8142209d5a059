"""Tucker-2 decomposition of Conv2d kernels (Kim et al. 2016, "Compression of deep convolutional
neural networks for fast and low power mobile applications").

The kernel ``W`` (C_out, C_in, kh, kw) is factored along its two channel modes only:
``W ≈ G ×_0 U_out ×_1 U_in`` with ``G`` (R_out, R_in, kh, kw). As layers this is
``1x1 (C_in → R_in) → kh x kw core (R_in → R_out; original stride/padding/dilation) → 1x1
(R_out → C_out, original bias)``. A mode kept at full rank has its factor folded into the core,
so the layer is two convs (one channel mode cut, as in Zhang et al. 2016's channel
decomposition) or three (both cut).

By default the factors are the truncated HOSVD: the leading singular vectors of the mode-0 and
mode-1 unfoldings, core = projection of ``W`` on them (closed form, quasi-optimal: its error is
within sqrt(2) of the best Tucker-2 error). ``method="hooi"`` refines them with tensorly's
``partial_tucker`` on modes (0, 1) (higher-order orthogonal iteration started from the HOSVD).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Literal

import torch
from torch import nn

from ._conv import check_conv, new_conv
from .rank import unfold


@dataclasses.dataclass
class Tucker2:
    """Tucker-2 factors of a conv kernel: ``W[o,i,y,x] ≈ Σ out[o,a] inp[i,b] core[a,b,y,x]``."""

    core: torch.Tensor  # (R_out, R_in, kh, kw)
    out: torch.Tensor  # (C_out, R_out)
    inp: torch.Tensor  # (C_in, R_in)

    @property
    def ranks(self) -> tuple[int, int]:
        """``(R_out, R_in)``."""
        return self.core.shape[0], self.core.shape[1]


def tucker2_factors(
    weight: torch.Tensor,
    ranks: tuple[int, int],
    *,
    method: Literal["hosvd", "hooi"] = "hosvd",
    n_iter_max: int = 20,
    seed: int = 0,
) -> Tucker2:
    """Tucker-2 factors of a 4-D kernel along modes 0 (output) and 1 (input), in float64.

    Args:
        weight: (C_out, C_in, kh, kw) kernel.
        ranks: ``(R_out, R_in)``, each between 1 and the channel count.
        method: ``"hosvd"`` (truncated HOSVD, closed form) or ``"hooi"`` (tensorly
            ``partial_tucker``: HOOI from the HOSVD, slightly lower error, several times slower).
        n_iter_max: HOOI iterations.
        seed: random state passed to tensorly.

    Example:
        >>> t = tucker2_factors(torch.randn(16, 8, 3, 3), (4, 3)); t.ranks
        (4, 3)
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D conv kernel, got shape {tuple(weight.shape)}")
    r_out, r_in = int(ranks[0]), int(ranks[1])
    c_out, c_in = weight.shape[:2]
    if not (1 <= r_out <= c_out and 1 <= r_in <= c_in):
        raise ValueError(f"ranks {ranks} out of range for C_out={c_out}, C_in={c_in}")
    w = weight.detach().to("cpu", torch.float64)
    if method == "hosvd":
        u_out, u_in = _leading_vectors(unfold(w, 0), r_out), _leading_vectors(unfold(w, 1), r_in)
        core = torch.einsum("oiyx,oa,ib->abyx", w, u_out, u_in)
        return Tucker2(core, u_out, u_in)
    if method != "hooi":
        raise ValueError(f"method must be 'hooi' or 'hosvd', got {method!r}")
    import tensorly as tl  # lazily: see cp.py
    from tensorly.decomposition import partial_tucker

    with tl.backend_context("pytorch"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        (core, (u_out, u_in)), _ = partial_tucker(
            w,
            rank=[r_out, r_in],
            modes=[0, 1],
            n_iter_max=n_iter_max,
            init="svd",
            random_state=seed,
        )
    return Tucker2(core, u_out, u_in)


def _leading_vectors(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    """Top-``rank`` left singular vectors via the eigendecomposition of the small Gram matrix
    (``C x C``), several times faster than an SVD of the wide ``C x C'k^2`` unfolding."""
    _, vectors = torch.linalg.eigh(matrix @ matrix.T)
    return vectors.flip(1)[:, :rank]


def tucker2_reconstruct(factors: Tucker2) -> torch.Tensor:
    """The kernel the factors represent, (C_out, C_in, kh, kw)."""
    return torch.einsum("abyx,oa,ib->oiyx", factors.core, factors.out, factors.inp)


def tucker2_conv(conv: nn.Conv2d, factors: Tucker2) -> nn.Sequential:
    """Build ``Sequential(1x1, core conv, 1x1)`` (or two convs, see below) from Tucker-2 factors.

    A factor at full rank (``R_in == C_in`` or ``R_out == C_out``) is folded into the core
    instead of becoming a layer: it would be a square 1x1 conv that costs ``C^2`` MACs per pixel
    and one more pass over the activations, and saves nothing. With one mode kept whole the
    layer is two convs (``kh x kw`` core, then one 1x1, or the reverse), which on CPU runs
    faster than three at the same MACs.

    Args:
        conv: the original layer (groups must be 1); its stride, padding, dilation and padding
            mode go to the core conv, its bias to the last layer.
        factors: from :func:`tucker2_factors` on ``conv.weight``.

    Example:
        >>> conv = nn.Conv2d(16, 32, 3, padding=1)
        >>> seq = tucker2_conv(conv, tucker2_factors(conv.weight, (8, 4)))
        >>> seq(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 32, 8, 8])
        >>> len(tucker2_conv(conv, tucker2_factors(conv.weight, (8, 16))))  # input mode folded
        2
    """
    check_conv(conv)
    r_out, r_in = factors.ranks
    fold_in, fold_out = r_in == conv.in_channels, r_out == conv.out_channels
    core_w = factors.core
    if fold_in:
        core_w = torch.einsum("abyx,ib->aiyx", core_w, factors.inp)
    if fold_out:
        core_w = torch.einsum("abyx,oa->obyx", core_w, factors.out)
    has_bias = conv.bias is not None
    core = new_conv(
        conv,
        core_w.shape[1],
        core_w.shape[0],
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        padding_mode=conv.padding_mode,
        bias=has_bias and fold_out,
    )
    layers = [core]
    dtype = conv.weight.dtype
    with torch.no_grad():
        core.weight.copy_(core_w.to(dtype))
        if not fold_in:
            first = new_conv(conv, conv.in_channels, r_in, 1)
            first.weight.copy_(factors.inp.T[:, :, None, None].to(dtype))
            layers.insert(0, first)
        if not fold_out:
            last = new_conv(conv, r_out, conv.out_channels, 1, bias=has_bias)
            last.weight.copy_(factors.out[:, :, None, None].to(dtype))
            layers.append(last)
        if has_bias:
            layers[-1].bias.copy_(conv.bias)
    return nn.Sequential(*layers)


def tucker2_macs(
    conv: nn.Conv2d, ranks: tuple[int, int], in_hw: tuple[int, int], out_hw: tuple[int, int]
) -> int:
    """MACs (per sample) of the Tucker-2 layers for input/output maps of the given sizes (a
    full-rank factor is folded into the core, see :func:`tucker2_conv`)."""
    r_out, r_in = ranks
    kh, kw = conv.kernel_size
    n_in, n_out = in_hw[0] * in_hw[1], out_hw[0] * out_hw[1]
    first = n_in * conv.in_channels * r_in if r_in < conv.in_channels else 0
    last = n_out * r_out * conv.out_channels if r_out < conv.out_channels else 0
    return first + n_out * r_in * r_out * kh * kw + last


def tucker2_params(conv: nn.Conv2d, ranks: tuple[int, int]) -> int:
    """Parameters of the Tucker-2 layers (full-rank factors folded into the core)."""
    r_out, r_in = ranks
    kh, kw = conv.kernel_size
    bias = conv.out_channels if conv.bias is not None else 0
    first = conv.in_channels * r_in if r_in < conv.in_channels else 0
    last = r_out * conv.out_channels if r_out < conv.out_channels else 0
    return first + r_in * r_out * kh * kw + last + bias
