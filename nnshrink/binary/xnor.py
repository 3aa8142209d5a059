"""Binary convolution and GEMM with XNOR + popcount on bit-packed operands (XNOR-Net inference).

For inputs and weights in {-1, +1}, a dot product of ``n`` terms is ``n - 2 * popcount(a XOR b)``
on their sign bits, so one 64-bit XOR and one popcount do the work of 64 multiply-adds
(Rastegari et al. 2016). :func:`xnor_conv2d` packs the signs of the input (``x >= 0``, so
``sign(0) = +1``) 64 channels to a word, runs the C kernel of ``_kernels/xnor.c`` on the packed
weights of :class:`PackedWeights`, and scales the exact integer result:

    ``y = conv(sign(u), sign(w)) * K * alpha + bias``, with ``u = x * in_scale + in_shift``

(each product a separately rounded float32 operation). Zero padding contributes 0, as in a float
convolution of ``sign(u)`` padded with zeros; channel counts need not be multiples of 64.

Backends (:func:`xnor_backend`): ``"avx512"`` (AVX-512 VPOPCNTDQ, chosen at run time),
``"portable"`` (plain C, any CPU) and ``"torch"`` (a float convolution of the signs, rounded:
the same numbers without a compiler, and the path for non-CPU tensors). The environment variable
``NNSHRINK_XNOR_BACKEND`` (``auto``/``avx512``/``portable``/``torch``) or the ``backend``
argument picks one. The C backends honour ``torch.get_num_threads()``.

Example:
    >>> x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    >>> y = xnor_conv2d(x, PackedWeights.from_weight(w), padding=(1, 1))
    >>> torch.equal(y, xnor_conv2d_reference(x, w, padding=(1, 1)))
    True
"""

from __future__ import annotations

import math
import os
from typing import Literal

import torch
import torch.nn.functional as F

from ._build import kernel_library
from .ops import sign_pm1

Backend = Literal["auto", "avx512", "portable", "torch"]
BACKENDS = ("auto", "avx512", "portable", "torch")
MAX_PRODUCTS = 1 << 24  # |dot| stays exact in float32 up to 2**24 terms

__all__ = [
    "BACKENDS",
    "PackedWeights",
    "pack_signs",
    "pack_weight_bits",
    "unpack_weight_bits",
    "xnor_backend",
    "xnor_conv2d",
    "xnor_conv2d_reference",
    "xnor_linear",
]


def xnor_backend(backend: str | None = None) -> str:
    """The backend that runs for CPU float32 tensors: ``"avx512"``, ``"portable"`` or ``"torch"``.

    Args:
        backend: ``None`` (the ``NNSHRINK_XNOR_BACKEND`` environment variable, default
            ``"auto"``) or one of :data:`BACKENDS`; ``"auto"`` picks the fastest available.

    Raises:
        ValueError: an unknown name, or a C backend this machine cannot run.

    Example:
        >>> xnor_backend("torch")
        'torch'
    """
    name = backend or os.environ.get("NNSHRINK_XNOR_BACKEND", "auto")
    if name not in BACKENDS:
        raise ValueError(f"unknown XNOR backend {name!r}; use one of {list(BACKENDS)}")
    if name == "torch":
        return name
    lib = kernel_library()
    if name == "auto":
        return "torch" if lib is None else ("avx512" if lib.avx512 else "portable")
    if lib is None:
        raise ValueError(
            f"XNOR backend {name!r} needs the compiled kernel, which is unavailable (see "
            "nnshrink.binary._build.build_status()); use backend='torch' or 'auto'"
        )
    if name == "avx512" and not lib.avx512:
        raise ValueError("this CPU lacks AVX-512 VPOPCNTDQ; use backend='portable' or 'auto'")
    return name


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def pack_weight_bits(w: torch.Tensor) -> torch.Tensor:
    """Sign bits of ``w`` (1 where ``w >= 0``), 8 per byte, C order, least significant bit first.

    The layout of :func:`nnshrink.storage.packbits.pack_binary` (``ceil(numel / 8)`` bytes), so a
    layer's stored bits and its ``PackedTensor`` agree byte for byte.

    Example:
        >>> pack_weight_bits(torch.tensor([1.0, -1.0, 0.0, -2.0])).tolist()
        [5]
    """
    bits = (w.detach() >= 0).reshape(-1).to(torch.uint8)
    pad = (-bits.numel()) % 8
    if pad:
        bits = torch.cat([bits, bits.new_zeros(pad)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=bits.device)
    return (bits.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_weight_bits(bits: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_weight_bits`: a float32 tensor of ``+1``/``-1`` of ``shape``.

    Example:
        >>> unpack_weight_bits(torch.tensor([5], dtype=torch.uint8), (4,)).tolist()
        [1.0, -1.0, 1.0, -1.0]
    """
    count = math.prod(shape)
    if bits.dtype != torch.uint8 or bits.numel() != math.ceil(count / 8):
        raise ValueError(
            f"expected {math.ceil(count / 8)} uint8 bytes for shape {tuple(shape)}, got "
            f"{bits.numel()} of {bits.dtype}"
        )
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    flat = ((bits.reshape(-1, 1) >> shifts) & 1).reshape(-1)[:count]
    return (flat.to(torch.float32) * 2 - 1).reshape(shape)


class PackedWeights:
    """Binary weights of one layer: the stored sign bits, and their kernel layout made on demand.

    Args:
        bits: :func:`pack_weight_bits` of the weight (uint8).
        shape: ``(O, C, kh, kw)`` (a linear layer is ``(O, F, 1, 1)``).

    Example:
        >>> p = PackedWeights.from_weight(torch.randn(8, 70, 3, 3))
        >>> p.bits.numel(), tuple(p.words().shape)
        (630, (1, 9, 2, 8))
    """

    def __init__(self, bits: torch.Tensor, shape: tuple[int, int, int, int]) -> None:
        if len(shape) != 4:
            raise ValueError(f"expected a 4-d weight shape (O, C, kh, kw), got {shape}")
        if bits.dtype != torch.uint8 or bits.numel() != math.ceil(math.prod(shape) / 8):
            raise ValueError(
                f"{bits.numel()} bytes of {bits.dtype} do not hold the sign bits of a "
                f"{tuple(shape)} weight (expected {math.ceil(math.prod(shape) / 8)} uint8)"
            )
        self.bits = bits
        self.shape = tuple(int(s) for s in shape)
        self._signs: torch.Tensor | None = None
        self._words: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_weight(cls, w: torch.Tensor) -> PackedWeights:
        """Pack the signs of a float weight of shape ``(O, C, kh, kw)`` or ``(O, F)``."""
        shape = tuple(w.shape) if w.dim() == 4 else (w.shape[0], w.shape[1], 1, 1)
        return cls(pack_weight_bits(w), shape)

    def signs(self) -> torch.Tensor:
        """The weight as float32 ``+1``/``-1`` (for the PyTorch backend; cached)."""
        if self._signs is None:
            self._signs = unpack_weight_bits(self.bits, self.shape)
        return self._signs

    def words(self) -> torch.Tensor:
        """Kernel layout ``[ceil(O/8), kh*kw, ceil(C/64), 8]`` of 64-bit words (cached)."""
        return self._kernel_layout()[0]

    def pops(self) -> torch.Tensor:
        """Number of ``+1`` weights per (output channel, tap), ``[ceil(O/8), kh*kw, 8]``."""
        return self._kernel_layout()[1]

    def _kernel_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._words is None:
            o, c, kh, kw = self.shape
            taps, ob = kh * kw, (o + 7) // 8
            signs = unpack_weight_bits(self.bits.cpu(), self.shape)
            rows = signs.permute(0, 2, 3, 1).reshape(1, o * taps, 1, c)  # one "pixel" per tap
            words = pack_signs(rows.permute(0, 3, 1, 2), backend="portable")  # [1, O*T, 1, Cw]
            words = words.reshape(o, taps, -1)
            words = F.pad(words, (0, 0, 0, 0, 0, ob * 8 - o)).reshape(ob, 8, taps, -1)
            pops = (signs > 0).sum(dim=1).reshape(o, taps).to(torch.int64)
            pops = F.pad(pops, (0, 0, 0, ob * 8 - o)).reshape(ob, 8, taps)
            self._words = (
                words.permute(0, 2, 3, 1).contiguous(),
                pops.permute(0, 2, 1).contiguous(),
            )
        return self._words

    def __repr__(self) -> str:
        return f"PackedWeights(shape={self.shape}, bytes={self.bits.numel()})"


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _channel_vector(v: torch.Tensor | None, n: int, what: str) -> torch.Tensor | None:
    if v is None:
        return None
    v = v.detach().reshape(-1)
    if v.numel() != n:
        raise ValueError(f"{what} has {v.numel()} values, expected {n}")
    return v.to(torch.float32).contiguous()


def pack_signs(
    x: torch.Tensor,
    padding: tuple[int, int] = (0, 0),
    *,
    in_scale: torch.Tensor | None = None,
    in_shift: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Sign bits of ``u = x * in_scale + in_shift`` (per channel) as 64-bit words, NHWC.

    Args:
        x: float32 CPU tensor ``(N, C, H, W)``, any strides (channels-last and contiguous are
            the fast layouts).
        padding: zero words added on each side of H and W (the convolution's padding).
        in_scale, in_shift: optional per-channel affine applied before the sign.
        backend: as :func:`xnor_backend` (``"torch"`` is not a packer: it means ``"portable"``).

    Returns:
        int64 tensor ``(N, H + 2*ph, W + 2*pw, ceil(C/64))``; channel ``c`` is bit ``c % 64``
        of word ``c // 64``; bit 1 means ``u >= 0``.

    Example:
        >>> pack_signs(torch.tensor([1.0, -1.0, 0.0]).reshape(1, 3, 1, 1)).tolist()
        [[[[5]]]]
    """
    lib = kernel_library()
    if lib is None:
        raise RuntimeError("pack_signs needs the compiled XNOR kernel (no C compiler found)")
    if x.dim() != 4 or x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"pack_signs expects a float32 CPU (N, C, H, W) tensor, got {x.shape}")
    n, c, h, w = x.shape
    ph, pw = padding
    words = torch.zeros(n, h + 2 * ph, w + 2 * pw, (c + 63) // 64, dtype=torch.int64)
    in_scale = _channel_vector(in_scale, c, "in_scale")
    in_shift = _channel_vector(in_shift, c, "in_shift")
    if (in_scale is None) != (in_shift is None):
        raise ValueError("give both in_scale and in_shift, or neither")
    if x.numel():
        name = "portable" if backend == "torch" else xnor_backend(backend)
        lib.pack(
            x.data_ptr(), n, c, h, w, *x.stride(), _ptr(in_scale), _ptr(in_shift), ph, pw,
            words.data_ptr(), int(name == "avx512"), torch.get_num_threads(),
        )  # fmt: skip
    return words


# --------------------------------------------------------------------------------------------
# Convolution and linear
# --------------------------------------------------------------------------------------------


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _scale(
    y: torch.Tensor, k: torch.Tensor | None, alpha: torch.Tensor | None, bias: torch.Tensor | None
) -> torch.Tensor:
    shape = (1, -1) + (1,) * (y.dim() - 2)
    if k is not None:
        y = y * k
    if alpha is not None:
        y = y * alpha.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def xnor_conv2d(
    x: torch.Tensor,
    weights: PackedWeights,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    k: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    in_scale: torch.Tensor | None = None,
    in_shift: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Binary convolution ``conv(sign(u), sign(w)) * k * alpha + bias`` by XNOR + popcount.

    Args:
        x: input ``(N, C, H, W)``; ``u = x * in_scale + in_shift`` when those are given.
        weights: the packed weight signs, shape ``(O, C, kh, kw)``.
        stride, padding, dilation: as ``torch.nn.functional.conv2d`` (zero padding, groups=1).
        k: activation scale broadcastable to ``(N, 1, Ho, Wo)`` (e.g. from
            :func:`~nnshrink.binary.ops.activation_scale`), or None.
        alpha: per-output-channel weight scale ``(O,)``, or None.
        bias: ``(O,)`` or None.
        in_scale, in_shift: per-input-channel affine applied before the sign, or None.
        backend: as :func:`xnor_backend`; non-CPU or non-float32 inputs use ``"torch"``.

    Returns:
        ``(N, O, Ho, Wo)`` float32; the C backends return it in channels-last memory.
    """
    o, c, kh, kw = weights.shape
    if x.dim() != 4 or x.shape[1] != c:
        raise ValueError(
            f"expected input (N, {c}, H, W) for weights {weights.shape}, got {tuple(x.shape)}"
        )
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    if c * kh * kw > MAX_PRODUCTS:
        raise ValueError(f"{c * kh * kw} products per output exceed 2**24 (float32 exactness)")
    n, _, h, w = x.shape
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho <= 0 or wo <= 0:
        raise ValueError(f"input {h}x{w} is smaller than the {kh}x{kw} kernel (with padding)")
    alpha, bias = _channel_vector(alpha, o, "alpha"), _channel_vector(bias, o, "bias")
    name = xnor_backend(backend) if x.device.type == "cpu" and x.dtype == torch.float32 else "torch"
    if name == "torch":
        u = x
        if in_scale is not None:
            u = u * in_scale.reshape(1, -1, 1, 1) + in_shift.reshape(1, -1, 1, 1)
        signs = sign_pm1(u)
        wsign = weights.signs().to(device=x.device, dtype=signs.dtype)
        # Integers up to 2**24 are exact in float32; rounding guards against any conv algorithm
        # (e.g. Winograd) that would leave tiny errors.
        y = F.conv2d(signs, wsign, None, (sh, sw), (ph, pw), (dh, dw)).round()
        return _scale(y, k, alpha, bias)
    in_scale = _channel_vector(in_scale, c, "in_scale")
    in_shift = _channel_vector(in_shift, c, "in_shift")
    if (in_scale is None) != (in_shift is None):
        raise ValueError("give both in_scale and in_shift, or neither")
    kk = None
    if k is not None:
        kk = k.detach().to(torch.float32).expand(n, 1, ho, wo).contiguous()
    out = torch.empty(n, ho, wo, o, dtype=torch.float32)
    if n:
        rc = kernel_library().conv_float(
            x.data_ptr(), n, c, h, w, *x.stride(), _ptr(in_scale), _ptr(in_shift),
            weights.words().data_ptr(), weights.pops().data_ptr(),
            o, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo,
            _ptr(kk), _ptr(alpha), _ptr(bias), out.data_ptr(),
            int(name == "avx512"), torch.get_num_threads(),
        )  # fmt: skip
        if rc:
            raise MemoryError(f"XNOR kernel failed (code {rc}) for input {tuple(x.shape)}")
    return out.permute(0, 3, 1, 2)


def xnor_linear(
    x: torch.Tensor,
    weights: PackedWeights,
    *,
    k: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    in_scale: torch.Tensor | None = None,
    in_shift: torch.Tensor | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Binary GEMM ``sign(u) @ sign(w).T * k * alpha + bias`` (``x`` of shape ``(..., F)``).

    Arguments as :func:`xnor_conv2d`; ``k`` broadcasts against ``(..., 1)`` (e.g.
    ``activation_scale(u)``), ``weights`` has shape ``(O, F, 1, 1)``.

    Example:
        >>> x, w = torch.randn(2, 100), torch.randn(3, 100)
        >>> y = xnor_linear(x, PackedWeights.from_weight(w))
        >>> torch.equal(y, (torch.where(x >= 0, 1.0, -1.0) @ torch.where(w >= 0, 1.0, -1.0).T))
        True
    """
    o, f = weights.shape[:2]
    if weights.shape[2:] != (1, 1) or x.shape[-1] != f:
        raise ValueError(
            f"expected input (..., {f}) for weights {weights.shape}, got {tuple(x.shape)}"
        )
    lead = x.shape[:-1]
    flat = x.reshape(-1, f, 1, 1)
    kk = None if k is None else k.reshape(-1, 1, 1, 1).expand(flat.shape[0], 1, 1, 1)
    y = xnor_conv2d(
        flat, weights, k=kk, alpha=alpha, bias=bias, in_scale=in_scale, in_shift=in_shift,
        backend=backend,
    )  # fmt: skip
    return y.reshape(*lead, o)


def xnor_conv2d_reference(
    x: torch.Tensor,
    w: torch.Tensor,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    k: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The float oracle: a float64 convolution of ``sign(x)`` and ``sign(w)``, then the scales.

    ``sign(0) = +1``; padding adds zeros after the sign. The float64 sum of +-1 terms is exact, so
    :func:`xnor_conv2d` must equal this bit for bit.
    """
    sx, sw = sign_pm1(x).double(), sign_pm1(w).double()
    if sw.dim() == 2:
        sw = sw[:, :, None, None]
    y = F.conv2d(sx, sw, None, _pair(stride), _pair(padding), _pair(dilation)).float()
    o = w.shape[0]
    return _scale(y, k, _channel_vector(alpha, o, "alpha"), _channel_vector(bias, o, "bias"))
