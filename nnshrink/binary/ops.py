"""Pure functions of binary and ternary quantization (tensor in, tensor out).

Signs, the straight-through estimator, XNOR per-channel scales, XNOR-Net's binary activations and
their scale ``K``, and the TWN / TTQ ternarizers used by the layers in :mod:`nnshrink.binary.layers`
and :mod:`nnshrink.binary.xnor_layers`. Formulas and papers: those modules' docstrings.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

BinaryMode = Literal["deterministic", "stochastic", "xnor"]
TernaryMode = Literal["twn", "ttq"]

# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def sign_pm1(w: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``w >= 0`` else ``-1`` (``torch.sign`` would map 0 to 0, a third value).

    NaN maps to ``-1`` and ``-0.0`` to ``+1``, as in the XNOR kernel's packing (``x >= 0``).
    """
    # (w >= 0) * 2 - 1 in place: ~30x faster than a where() over two full tensors of ones
    return (w >= 0).to(w.dtype).mul_(2).sub_(1)


def ste(latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Value of ``quantized``, gradient passed unchanged to ``latent`` (straight-through).

    Written as ``q + (w - w)`` rather than ``w + (q - w)``: the former is bit-exact (``w - w`` is
    exactly 0), the latter rounds, and bit-packing needs exactly one magnitude per channel.
    """
    return quantized.detach() + (latent - latent.detach())


def xnor_scales(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel ``alpha_c = mean |W_c|``, shaped to broadcast against ``w``."""
    dims = tuple(range(1, w.dim()))
    return w.abs().mean(dim=dims, keepdim=True) if dims else w.abs()


class _SignSTE(torch.autograd.Function):
    """``sign(x)`` forward, gradient masked to ``|x| <= 1`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return sign_pm1(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad.masked_fill(x.abs() > 1, 0.0)


def binary_activation(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)`` with ``sign(0) = +1``, gradient passed where ``|x| <= 1`` (clipped STE).

    The straight-through estimator of BinaryNet / XNOR-Net: the gradient of ``sign`` is taken as
    that of ``clip(x, -1, 1)``, so inputs far outside the range stop receiving gradient.

    Example:
        >>> x = torch.tensor([-2.0, -0.5, 0.0, 3.0], requires_grad=True)
        >>> y = binary_activation(x); y.sum().backward()
        >>> y.tolist(), x.grad.tolist()
        ([-1.0, -1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0])
    """
    return _SignSTE.apply(x)


def activation_scale(
    x: torch.Tensor,
    kernel_size: tuple[int, int] | None = None,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> torch.Tensor:
    """XNOR-Net's activation scale ``K``: mean ``|x|`` over channels, box-filtered like the conv.

    ``A = mean_c |x_c|`` and ``K = A * k`` with ``k`` the ``kh x kw`` filter of ``1/(kh*kw)``,
    applied with the convolution's stride, zero padding and dilation, so ``K`` has one value per
    output position (Rastegari et al. 2016, section 3.2). For a linear layer (``x`` of shape
    ``(N, F)``, ``kernel_size=None``) it is ``mean |x|`` per sample, shape ``(N, 1)``.

    Example:
        >>> activation_scale(torch.ones(1, 2, 3, 3), (3, 3), padding=(1, 1))[0, 0, 1]
        tensor([0.6667, 1.0000, 0.6667])
    """
    a = x.abs().mean(dim=1, keepdim=True)
    if kernel_size is None:
        return a
    kh, kw = kernel_size
    if tuple(dilation) == (1, 1) and 2 * padding[0] <= kh and 2 * padding[1] <= kw:
        # the same box filter, several times faster than a one-channel convolution
        return F.avg_pool2d(a, (kh, kw), stride, padding, count_include_pad=True)
    box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=x.dtype, device=x.device)
    return F.conv2d(a, box, None, stride, padding, dilation)


def binarize(
    w: torch.Tensor, mode: BinaryMode = "deterministic", *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Binary weights (no STE): ``sign(w)``, a stochastic sign, or ``alpha_c * sign(w)``.

    Args:
        w: real-valued weights, output channel first.
        mode: ``"deterministic"``, ``"stochastic"`` (``P(+1) = clip((w + 1) / 2, 0, 1)``) or
            ``"xnor"``.
        generator: random source for ``"stochastic"``.

    Example:
        >>> binarize(torch.tensor([[0.2, -0.4]]), "xnor").tolist()
        [[0.30000001192092896, -0.30000001192092896]]
    """
    if mode == "deterministic":
        return sign_pm1(w)
    if mode == "stochastic":
        p = ((w + 1) / 2).clamp(0, 1)
        u = torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        return torch.where(u < p, torch.ones_like(w), -torch.ones_like(w))
    if mode == "xnor":
        return xnor_scales(w) * sign_pm1(w)
    raise ValueError(f"unknown binary mode {mode!r}; use deterministic, stochastic or xnor")


def twn_threshold(w: torch.Tensor, factor: float = 0.7) -> torch.Tensor:
    """TWN threshold ``delta = factor * mean |W|`` (the paper's approximation uses 0.7)."""
    return factor * w.abs().mean()


def ternarize_twn(w: torch.Tensor, factor: float = 0.7) -> torch.Tensor:
    """TWN ternary weights ``alpha * sign(w) * [|w| > delta]`` (no STE).

    ``alpha`` is the mean magnitude of the weights above the threshold, the closed-form minimiser
    of ``||W - alpha * T||^2`` for the fixed ternary pattern ``T``.

    Example:
        >>> ternarize_twn(torch.tensor([1.0, -0.5, 0.1, 0.0])).tolist()
        [0.75, -0.75, 0.0, 0.0]
    """
    delta = twn_threshold(w, factor)
    keep = w.abs() > delta
    alpha = w.abs()[keep].mean() if keep.any() else w.new_zeros(())
    return torch.where(keep, alpha * sign_pm1(w), torch.zeros_like(w))


def ternarize_ttq(
    w: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor, threshold: float = 0.05
) -> torch.Tensor:
    """TTQ ternary weights: ``wp`` where ``w > t*max|w|``, ``-wn`` where ``w < -t*max|w|``, else 0.

    Differentiable in ``wp`` and ``wn`` (their gradients are the summed gradients of their
    positions, as in the paper); use :class:`TernaryLinear` for the latent-weight STE.

    Example:
        >>> w = torch.tensor([1.0, -0.5, 0.01])
        >>> ternarize_ttq(w, torch.tensor(2.0), torch.tensor(3.0)).tolist()
        [2.0, -3.0, 0.0]
    """
    delta = threshold * w.detach().abs().max()
    pos = (w.detach() > delta).to(w.dtype)
    neg = (w.detach() < -delta).to(w.dtype)
    return wp * pos - wn * neg
