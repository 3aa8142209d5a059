"""CP decomposition of Conv2d kernels (Lebedev et al. 2015, "Speeding-up convolutional neural
networks using fine-tuned CP-decomposition").

A rank-``R`` CP model ``W[o,i,y,x] ≈ Σ_r out[o,r] inp[i,r] vertical[y,r] horizontal[x,r]`` turns
one conv into four: ``1x1 (C_in → R) → kh x 1 depthwise → 1 x kw depthwise → 1x1 (R → C_out, bias)``.
The vertical depthwise conv carries the original stride, padding and dilation along the height,
the horizontal one along the width, so the result equals the original conv with the CP kernel.
``fuse_spatial=True`` merges the two depthwise convs into one ``kh x kw`` depthwise conv (three
convs, also exact), which runs faster on CPUs.

Factors come from tensorly's ``parafac`` (alternating least squares, SVD init, fixed seed) run
with the PyTorch backend inside ``tl.backend_context`` so the user's global backend is untouched.
When ``opt_einsum`` is installed we also switch tensorly's tensor-algebra backend to ``einsum``
(again only inside a context): its default MTTKRP materialises the Khatri–Rao product, which for
a 512x512x3x3 kernel at rank ~1000 is a 7 GB matrix; the einsum path contracts it away.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch
from torch import nn

from ._conv import check_conv, new_conv


@dataclasses.dataclass
class CPFactors:
    """CP factors of a conv kernel (component scales spread evenly over the four factors)."""

    out: torch.Tensor  # (C_out, R)
    inp: torch.Tensor  # (C_in, R)
    vertical: torch.Tensor  # (kh, R)
    horizontal: torch.Tensor  # (kw, R)

    @property
    def rank(self) -> int:
        """The CP rank ``R``."""
        return self.out.shape[1]


def cp_factors(
    weight: torch.Tensor, rank: int, *, n_iter_max: int = 100, seed: int = 0, tol: float = 1e-7
) -> CPFactors:
    """Rank-``rank`` CP factors of a 4-D kernel by ALS (tensorly ``parafac``), in float64.

    Args:
        weight: (C_out, C_in, kh, kw) kernel.
        rank: CP rank ``R >= 1``.
        n_iter_max: ALS iterations (cost per iteration grows with ``R * weight.numel()``).
        seed: random state for columns the SVD init cannot fill (``R`` above a mode's size).
        tol: relative change of the reconstruction error that stops ALS early.

    Example:
        >>> cp_factors(torch.randn(8, 4, 3, 3), 6).rank
        6
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D conv kernel, got shape {tuple(weight.shape)}")
    if rank < 1:
        raise ValueError(f"CP rank must be >= 1, got {rank}")
    # imported here: tensorly (and the torch backend it loads) adds ~1 s to `import nnshrink`
    import tensorly as tl
    from tensorly.decomposition import parafac

    w = weight.detach().to("cpu", torch.float64)
    # the core MTTKRP builds a (numel / smallest mode) x R Khatri-Rao matrix
    kr_elements = rank * w.numel() // min(w.shape)
    with (
        tl.backend_context("pytorch"),
        _tenalg_context(kr_elements > 4_000_000),
        warnings.catch_warnings(),
    ):
        # tensorly warns when R exceeds a mode's size; the SVD init then pads with random columns
        warnings.simplefilter("ignore", UserWarning)
        cp = parafac(
            w,
            rank,
            n_iter_max=n_iter_max,
            init="svd",
            random_state=seed,
            tol=tol,
            normalize_factors=False,
        )
    weights, factors = cp.weights, list(cp.factors)
    # spread each component's scale evenly so no factor conv has tiny or huge weights
    norms = [f.norm(dim=0) for f in factors]
    scale = weights.abs() * torch.stack(norms).prod(0)
    root = scale.clamp_min(1e-300) ** 0.25
    unit = [f / n.clamp_min(1e-300) for f, n in zip(factors, norms)]
    unit[0] = unit[0] * torch.sign(weights)
    out, inp, vertical, horizontal = (u * root for u in unit)
    return CPFactors(out, inp, vertical, horizontal)


@contextlib.contextmanager
def _tenalg_context(large: bool):
    """tensorly's einsum tensor algebra for large problems when torch can plan contractions with
    opt_einsum (planning costs a few ms per call, more than it saves on small kernels)."""
    if large and torch.backends.opt_einsum.is_available():
        from tensorly import tenalg

        with tenalg.TenalgBackendManager.backend_context("einsum"):
            yield
    else:
        yield


def cp_reconstruct(factors: CPFactors) -> torch.Tensor:
    """The kernel the factors represent, (C_out, C_in, kh, kw)."""
    return torch.einsum(
        "or,ir,yr,xr->oiyx", factors.out, factors.inp, factors.vertical, factors.horizontal
    )


def _split(value, axis: int, neutral: int):
    """Keep ``value[axis]`` and put ``neutral`` on the other spatial axis (strings pass through)."""
    if isinstance(value, str):
        return value
    return (value[0], neutral) if axis == 0 else (neutral, value[1])


def cp_conv(conv: nn.Conv2d, factors: CPFactors, *, fuse_spatial: bool = False) -> nn.Sequential:
    """Build the CP layer from factors of ``conv.weight``: four convs, or three when fused.

    With ``fuse_spatial`` the ``kh x 1`` and ``1 x kw`` depthwise convs become one ``kh x kw``
    depthwise conv whose kernel is their outer product (exact). It costs ``kh*kw`` instead of
    ``kh + kw`` MACs per rank and pixel, negligible beside the two 1x1 convs, and saves one pass
    over ``R`` channels of activations: at a 2x MAC cut ``R`` exceeds the channel count, so on a
    CPU that pass is what CP spends its time on.

    Args:
        conv: the original layer (groups must be 1).
        factors: from :func:`cp_factors` on ``conv.weight``.
        fuse_spatial: one ``kh x kw`` depthwise conv instead of two 1-D ones.

    Example:
        >>> conv = nn.Conv2d(8, 16, 3, padding=1)
        >>> cp_conv(conv, cp_factors(conv.weight, 8))(torch.randn(1, 8, 6, 6)).shape
        torch.Size([1, 16, 6, 6])
        >>> len(cp_conv(conv, cp_factors(conv.weight, 8), fuse_spatial=True))
        3
    """
    check_conv(conv)
    rank = factors.rank
    kh, kw = conv.kernel_size
    first = new_conv(conv, conv.in_channels, rank, 1)
    last = new_conv(conv, rank, conv.out_channels, 1, bias=conv.bias is not None)
    geometry = {"groups": rank, "padding_mode": conv.padding_mode}
    if fuse_spatial:
        full = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
        spatial = [new_conv(conv, rank, rank, (kh, kw), **full, **geometry)]
        kernels = [torch.einsum("yr,xr->ryx", factors.vertical, factors.horizontal)[:, None]]
    else:
        spatial = [
            new_conv(
                conv,
                rank,
                rank,
                kernel,
                stride=_split(conv.stride, axis, 1),
                padding=_split(conv.padding, axis, 0),
                dilation=_split(conv.dilation, axis, 1),
                **geometry,
            )
            for axis, kernel in ((0, (kh, 1)), (1, (1, kw)))
        ]
        kernels = [factors.vertical.T[:, None, :, None], factors.horizontal.T[:, None, None, :]]
    dtype = conv.weight.dtype
    with torch.no_grad():
        first.weight.copy_(factors.inp.T[:, :, None, None].to(dtype))
        for layer, kernel in zip(spatial, kernels):
            layer.weight.copy_(kernel.to(dtype))
        last.weight.copy_(factors.out[:, :, None, None].to(dtype))
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(first, *spatial, last)


def cp_macs(
    conv: nn.Conv2d,
    rank: int,
    in_hw: tuple[int, int],
    out_hw: tuple[int, int],
    *,
    fuse_spatial: bool = False,
) -> int:
    """MACs (per sample) of the CP convs; the vertical conv keeps the input width."""
    kh, kw = conv.kernel_size
    n_in, n_out = in_hw[0] * in_hw[1], out_hw[0] * out_hw[1]
    if fuse_spatial:
        return rank * (n_in * conv.in_channels + n_out * (kh * kw + conv.out_channels))
    n_mid = out_hw[0] * in_hw[1]
    return rank * (n_in * conv.in_channels + n_mid * kh + n_out * (kw + conv.out_channels))


def cp_params(conv: nn.Conv2d, rank: int, *, fuse_spatial: bool = False) -> int:
    """Parameters of the CP convs."""
    kh, kw = conv.kernel_size
    spatial = kh * kw if fuse_spatial else kh + kw
    bias = conv.out_channels if conv.bias is not None else 0
    return rank * (conv.in_channels + spatial + conv.out_channels) + bias
