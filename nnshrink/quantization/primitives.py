"""Pure uniform-quantization math: ranges, scale / zero-point, quantize, dequantize, fake-quant.

Conventions (the ones ONNX Runtime, TensorRT and torch.ao use):

* **symmetric** quantization is signed with a *restricted* range ``[-(2**(b-1) - 1), 2**(b-1) - 1]``
  and ``zero_point == 0``, so ``-x`` and ``x`` map to opposite codes;
* **asymmetric** quantization is unsigned ``[0, 2**b - 1]`` with an integer zero-point; the range is
  widened to include 0 so that zero padding and ReLU zeros are exact.

``axis`` selects per-channel parameters: ``scale`` / ``zero_point`` are then 1-D with one entry per
index of ``x.shape[axis]``; ``axis=None`` means per-tensor (0-d parameters).
"""

from __future__ import annotations

import math

import torch

_EPS = 1e-12


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer code range ``(qmin, qmax)`` for ``bits`` (2..8 here, any >= 2 works).

    Args:
        bits: number of bits.
        symmetric: signed restricted range if True, unsigned full range otherwise.

    Example:
        >>> qrange(8, True), qrange(8, False), qrange(4, True)
        ((-127, 127), (0, 255), (-7, 7))
    """
    if not isinstance(bits, int) or bits < 2 or bits > 16:
        raise ValueError(f"bits must be an integer in [2, 16], got {bits!r}")
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def qparams_from_range(
    min_val: torch.Tensor | float,
    max_val: torch.Tensor | float,
    bits: int = 8,
    symmetric: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point covering ``[min_val, max_val]`` (0-d or 1-d per channel).

    Args:
        min_val: observed minimum (tensor or float; 1-D for per-channel).
        max_val: observed maximum, same shape as ``min_val``.
        bits: bit width.
        symmetric: ``scale = max(|min|, |max|) / qmax`` and ``zero_point = 0`` if True; else an
            unsigned affine map of ``[min(min_val, 0), max(max_val, 0)]`` onto ``[0, 2**b - 1]``.

    Returns:
        ``(scale float32, zero_point int64)`` with the shape of ``min_val``.

    Example:
        >>> s, z = qparams_from_range(-1.0, 1.0, bits=8, symmetric=True); float(s) * 127
        1.0
    """
    lo = torch.as_tensor(min_val, dtype=torch.float64)
    hi = torch.as_tensor(max_val, dtype=torch.float64)
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = torch.clamp(amax / qmax, min=_EPS)
        zero_point = torch.zeros_like(scale, dtype=torch.int64)
    else:
        lo = torch.clamp(lo, max=0.0)
        hi = torch.clamp(hi, min=0.0)
        scale = torch.clamp((hi - lo) / (qmax - qmin), min=_EPS)
        zero_point = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int64)
    return scale.to(torch.float32), zero_point


def minmax_qparams(
    x: torch.Tensor, bits: int = 8, symmetric: bool = True, axis: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale / zero-point from the min and max of ``x`` (per tensor, or per channel along ``axis``).

    Example:
        >>> w = torch.randn(4, 3, 3, 3)
        >>> s, z = minmax_qparams(w, 8, True, axis=0); tuple(s.shape)
        (4,)
    """
    if axis is None:
        return qparams_from_range(x.min(), x.max(), bits, symmetric)
    flat = x.detach().transpose(0, axis).reshape(x.shape[axis], -1)
    return qparams_from_range(flat.min(dim=1).values, flat.max(dim=1).values, bits, symmetric)


def _broadcast(p: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    p = torch.as_tensor(p, device=x.device)
    if axis is None or p.dim() == 0:
        return p
    shape = [1] * x.dim()
    shape[axis] = -1
    return p.reshape(shape)


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    bits: int = 8,
    symmetric: bool = True,
    axis: int | None = None,
) -> torch.Tensor:
    """Map real values to integer codes: ``clamp(round(x / scale) + zero_point, qmin, qmax)``.

    Returns an ``int8`` tensor for symmetric codes and ``uint8`` for asymmetric ones (``int16``
    above 8 bits). Ties round half to even, as ``torch.round`` and ONNX ``QuantizeLinear`` do.

    Example:
        >>> quantize(torch.tensor([0.5, -2.0]), torch.tensor(0.5), torch.tensor(0), 8, True)
        tensor([ 1, -4], dtype=torch.int8)
    """
    qmin, qmax = qrange(bits, symmetric)
    s = _broadcast(scale, x, axis)
    z = _broadcast(zero_point, x, axis)
    q = torch.clamp(torch.round(x / s) + z, qmin, qmax)
    if bits <= 8:
        return q.to(torch.int8 if symmetric else torch.uint8)
    return q.to(torch.int32)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int | None = None
) -> torch.Tensor:
    """Map integer codes back to reals: ``(q - zero_point) * scale`` (float32).

    Example:
        >>> dequantize(torch.tensor([1, -4], dtype=torch.int8), torch.tensor(0.5), torch.tensor(0))
        tensor([ 0.5000, -2.0000])
    """
    s = _broadcast(scale, q, axis).to(torch.float32)
    z = _broadcast(zero_point, q, axis)
    return (q.to(torch.int32) - z).to(torch.float32) * s


class _FakeQuantSTE(torch.autograd.Function):
    """Round-and-clamp in the forward pass; straight-through gradient inside the clamp range."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax):  # noqa: D102
        q = torch.round(x / scale) + zero_point
        inside = (q >= qmin) & (q <= qmax)
        ctx.save_for_backward(inside)
        return (torch.clamp(q, qmin, qmax) - zero_point) * scale

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        (inside,) = ctx.saved_tensors
        return grad_out * inside.to(grad_out.dtype), None, None, None, None


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    bits: int = 8,
    symmetric: bool = True,
    axis: int | None = None,
) -> torch.Tensor:
    """Quantize then dequantize in float, with a straight-through estimator for the gradient.

    The gradient w.r.t. ``x`` is 1 where the value lands inside ``[qmin, qmax]`` and 0 where it is
    clipped (Bengio et al. 2013; Jacob et al. 2018). ``scale`` and ``zero_point`` get no gradient;
    use :func:`lsq_fake_quantize` to learn the step size.

    Example:
        >>> x = torch.tensor([0.26, 5.0], requires_grad=True)
        >>> y = fake_quantize(x, torch.tensor(0.1), torch.tensor(0), 4, True)
        >>> y.sum().backward(); y.detach(), x.grad
        (tensor([0.3000, 0.7000]), tensor([1., 0.]))
    """
    qmin, qmax = qrange(bits, symmetric)
    s = _broadcast(scale, x, axis).to(x.dtype)
    z = _broadcast(zero_point, x, axis).to(x.dtype)
    return _FakeQuantSTE.apply(x, s, z, qmin, qmax)


def lsq_grad_scale(numel: int, qmax: int) -> float:
    """LSQ step-size gradient scale ``g = 1 / sqrt(N * Qp)`` (Esser et al. 2020, section 2.2)."""
    return 1.0 / math.sqrt(max(numel, 1) * max(qmax, 1))


def lsq_init_step(x: torch.Tensor, qmax: int, axis: int | None = None) -> torch.Tensor:
    """LSQ step-size initialisation ``2 * mean(|x|) / sqrt(Qp)`` (per tensor or per ``axis``)."""
    if axis is None:
        return (2 * x.detach().abs().mean() / math.sqrt(qmax)).clamp(min=1e-8)
    flat = x.detach().transpose(0, axis).reshape(x.shape[axis], -1)
    return (2 * flat.abs().mean(dim=1) / math.sqrt(qmax)).clamp(min=1e-8)


def lsq_fake_quantize(
    x: torch.Tensor,
    step: torch.Tensor,
    qmin: int,
    qmax: int,
    grad_scale: float,
    axis: int | None = None,
) -> torch.Tensor:
    """Learned-step-size fake quantization (LSQ, Esser et al. 2020) with ``zero_point = 0``.

    Written with the detach trick so autograd produces exactly the paper's gradients: STE for ``x``
    (1 inside the range, 0 outside) and, for ``step``, ``-x/s + round(x/s)`` inside the range and
    ``qmin`` / ``qmax`` when clipped, all multiplied by ``grad_scale``.

    Args:
        x: input tensor.
        step: learnable step size (0-d, or 1-D along ``axis``); must be positive.
        qmin: lowest code (e.g. -127 for signed 8-bit, 0 for unsigned).
        qmax: highest code.
        grad_scale: multiplier of the step gradient, usually :func:`lsq_grad_scale`.
        axis: channel axis for per-channel steps.

    Example:
        >>> s = torch.tensor(0.1, requires_grad=True)
        >>> lsq_fake_quantize(torch.randn(100), s, -7, 7, lsq_grad_scale(100, 7)).sum().backward()
        >>> bool(torch.isfinite(s.grad))
        True
    """
    s = _broadcast(step, x, axis)
    # gradient scaling: value of s, gradient of s * grad_scale
    s = (s - s * grad_scale).detach() + s * grad_scale
    v = torch.clamp(x / s, qmin, qmax)
    v = (torch.round(v) - v).detach() + v
    return v * s
