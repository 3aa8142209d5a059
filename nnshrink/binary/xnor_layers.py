"""XNOR-Net layers: binary weights *and* binary activations, run by the XNOR + popcount kernel.

XNOR-Net (Rastegari et al. 2016) binarizes both operands of a convolution:

    ``y = (sign(u) (*) sign(W)) * K * alpha + b``,   ``u = BN(x)``

with ``alpha_c = mean |W_c|`` per output channel and ``K`` the mean of ``|u|`` over channels,
box-filtered over each window (:func:`~nnshrink.binary.ops.activation_scale`). The paper's block
is BatchNorm -> BinActiv -> BinConv; each layer here carries that input batch norm itself (a ReLU
usually feeds a convolution, and ``sign`` of a non-negative input is constant ``+1``; the batch
norm centres it and keeps it in the STE's ``[-1, 1]`` window).

Two forms:

* :class:`XNORConv2d` / :class:`XNORLinear` (what ``compress_(model, BinaryWeights(mode="xnor",
  activations=True))`` installs): latent float weights, trained with straight-through estimators
  (weights as :class:`~nnshrink.binary.layers.BinaryConv2d`'s XNOR mode, activations with the
  clipped STE). In ``eval()`` mode (and when no gradient to the input is needed) the forward
  packs the signs and runs :func:`~nnshrink.binary.xnor.xnor_conv2d`; the packed weights are
  cached until the weight changes.
* :class:`PackedXNORConv2d` / :class:`PackedXNORLinear` (what :func:`nnshrink.finalize` makes):
  inference only, holding the sign bits (``weight_bits``, 1 bit per weight), ``alpha``, the input
  batch norm folded into ``in_scale`` / ``in_shift``, and the bias. ``.nns`` stores exactly that.

Both forms of a layer give identical eval outputs (tested), on every backend.

Example:
    >>> layer = XNORConv2d(8, 4, 3, padding=1).eval()
    >>> packed = PackedXNORConv2d.from_layer(layer)
    >>> x = torch.randn(1, 8, 5, 5)
    >>> torch.equal(layer(x), packed(x))
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import set_submodule
from ..core.finalize import register_finalizer
from ..io import layer_kwargs, register_module
from .ops import activation_scale, binary_activation, sign_pm1, ste, xnor_scales
from .xnor import PackedWeights, xnor_conv2d, xnor_linear

__all__ = [
    "PackedXNORConv2d",
    "PackedXNORLinear",
    "XNORConv2d",
    "XNORLinear",
    "finalize_xnor",
]


def _fold(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode batch norm as ``x * scale + shift`` (float32)."""
    scale = torch.rsqrt(norm.running_var.float() + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.detach().float()
    shift = -norm.running_mean.float() * scale
    if norm.bias is not None:
        shift = shift + norm.bias.detach().float()
    return scale, shift


def _stamp(*tensors: torch.Tensor | None) -> tuple:
    """Identity and version of tensors: a cache built from them is stale once this changes."""
    return tuple((t.data_ptr(), t._version, t.device) if t is not None else None for t in tensors)


def _runs_kernel(module: nn.Module, x: torch.Tensor) -> bool:
    return not module.training and not (torch.is_grad_enabled() and x.requires_grad)


def _conv_macs(m: nn.Module, output: torch.Tensor) -> int:
    kh, kw = m.kernel_size
    return output.numel() * m.in_channels * kh * kw


class _XNORMixin:
    """Shared training/eval logic of XNORConv2d and XNORLinear."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    input_norm: nn.modules.batchnorm._BatchNorm
    scale_activations: bool
    training: bool

    def _init_cache(self) -> None:
        self._cache: tuple[tuple, Any] | None = None

    def quantized_weight(self) -> torch.Tensor:
        """``alpha_c * sign(W)``, the weight the layer computes with (latent gradient via STE)."""
        w = self.weight
        return ste(w, xnor_scales(w.detach()) * sign_pm1(w.detach()))

    @torch.no_grad()
    def deploy_state(self) -> tuple[PackedWeights, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(packed weights, alpha, in_scale, in_shift)`` of the eval-mode layer (cached)."""
        norm = self.input_norm
        stamp = _stamp(self.weight, norm.weight, norm.bias, norm.running_mean, norm.running_var)
        if self._cache is None or self._cache[0] != stamp:
            w = self.weight.detach()
            alpha = xnor_scales(w).reshape(-1).float()
            self._cache = (stamp, (PackedWeights.from_weight(w), alpha, *_fold(norm)))
        return self._cache[1]

    def _train_forward(self, x: torch.Tensor, conv: Any, k_args: Any) -> torch.Tensor:
        if self.training:
            u = self.input_norm(x)
        else:  # the folded affine the kernel applies, so both eval paths agree exactly
            _, _, scale, shift = self.deploy_state()
            shape = (1, -1) + (1,) * (x.dim() - 2)
            u = x * scale.reshape(shape) + shift.reshape(shape)
        w = self.weight
        y = conv(binary_activation(u), ste(w, sign_pm1(w.detach())))
        if self.scale_activations:
            y = y * activation_scale(u, *k_args)
        shape = (1, -1) + (1,) * (y.dim() - 2)
        y = y * xnor_scales(w).reshape(shape)
        return y if self.bias is None else y + self.bias.reshape(shape)


class XNORConv2d(_XNORMixin, nn.Conv2d):
    """``nn.Conv2d`` with binary weights and binary (scaled) activations: XNOR-Net's BinConv.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as
            ``nn.Conv2d`` (``groups=1`` and zero padding only: the kernel's form).
        scale_activations: multiply by the paper's ``K`` (False: ``alpha`` only, a little faster).

    Example:
        >>> XNORConv2d(3, 4, 3, padding=1)(torch.randn(2, 3, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        scale_activations: bool = True,
    ):
        if groups != 1 or padding_mode != "zeros" or isinstance(padding, str):
            raise ValueError(
                "XNORConv2d supports groups=1, padding_mode='zeros' and numeric padding only "
                f"(got groups={groups}, padding_mode={padding_mode!r}, padding={padding!r}); "
                "leave such layers in float (exclude them)"
            )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, 1, bias
        )  # fmt: skip
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.scale_activations = scale_activations
        self._init_cache()

    def _k_args(self) -> tuple:
        return (self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _runs_kernel(self, x):
            conv = lambda s, w: F.conv2d(s, w, None, self.stride, self.padding, self.dilation)  # noqa: E731
            return self._train_forward(x, conv, self._k_args())
        packed, alpha, scale, shift = self.deploy_state()
        return _conv_eval(self, x, packed, alpha, scale, shift)

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        return _conv_macs(self, output)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_activations={self.scale_activations}"


class XNORLinear(_XNORMixin, nn.Linear):
    """``nn.Linear`` with binary weights and binary (scaled) activations.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        scale_activations: multiply by ``K = mean |u|`` per sample.

    Example:
        >>> XNORLinear(16, 4)(torch.randn(3, 16)).shape
        torch.Size([3, 4])
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, scale_activations: bool = True
    ):
        super().__init__(in_features, out_features, bias)
        self.input_norm = nn.BatchNorm1d(in_features)
        self.scale_activations = scale_activations
        self._init_cache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _runs_kernel(self, x):
            if x.dim() != 2:  # BatchNorm1d reads (N, C): fold leading dimensions into N
                return self.forward(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
            return self._train_forward(x, F.linear, ())
        packed, alpha, scale, shift = self.deploy_state()
        return _linear_eval(self, x, packed, alpha, scale, shift)

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        return output.numel() * self.in_features

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale_activations={self.scale_activations}"


def _conv_eval(m, x, packed, alpha, scale, shift) -> torch.Tensor:
    k = None
    if m.scale_activations:
        u = x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
        k = activation_scale(u, m.kernel_size, m.stride, m.padding, m.dilation)
        x, scale, shift = u, None, None  # already applied
    return xnor_conv2d(
        x, packed, stride=m.stride, padding=m.padding, dilation=m.dilation, k=k, alpha=alpha,
        bias=m.bias, in_scale=scale, in_shift=shift,
    )  # fmt: skip


def _linear_eval(m, x, packed, alpha, scale, shift) -> torch.Tensor:
    k = None
    if m.scale_activations:
        u = x * scale + shift
        k = activation_scale(u.reshape(-1, u.shape[-1]))
        x, scale, shift = u, None, None
    return xnor_linear(
        x, packed, k=k, alpha=alpha, bias=m.bias, in_scale=scale, in_shift=shift
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Deploy forms
# --------------------------------------------------------------------------------------------


class _PackedMixin:
    """Buffers and caching shared by the packed deploy layers."""

    weight_bits: torch.Tensor
    alpha: torch.Tensor
    in_scale: torch.Tensor
    in_shift: torch.Tensor
    bias: torch.Tensor | None

    def _init_buffers(self, count: int, out: int, inp: int, bias: bool) -> None:
        self.register_buffer("weight_bits", torch.zeros((count + 7) // 8, dtype=torch.uint8))
        self.register_buffer("alpha", torch.ones(out))
        self.register_buffer("in_scale", torch.ones(inp))
        self.register_buffer("in_shift", torch.zeros(inp))
        self.register_buffer("bias", torch.zeros(out) if bias else None)
        self._cache: tuple[tuple, PackedWeights] | None = None

    def packed(self) -> PackedWeights:
        """The weight bits as :class:`~nnshrink.binary.xnor.PackedWeights` (cached)."""
        stamp = _stamp(self.weight_bits)
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, PackedWeights(self.weight_bits, self.weight_shape))
        return self._cache[1]

    @torch.no_grad()
    def _copy_from(self, layer: _XNORMixin) -> None:
        packed, alpha, scale, shift = layer.deploy_state()
        self.weight_bits.copy_(packed.bits)
        self.alpha.copy_(alpha)
        self.in_scale.copy_(scale)
        self.in_shift.copy_(shift)
        if layer.bias is not None:
            self.bias.copy_(layer.bias.detach())

    def dequantized_weight(self) -> torch.Tensor:
        """``alpha_c * sign(W)`` as a float tensor (what the layer multiplies the signs by)."""
        signs = self.packed().signs().to(self.alpha.device)
        shape = (-1,) + (1,) * (len(self.weight_shape) - 1)
        return (signs * self.alpha.reshape(shape)).reshape(self.weight_shape)


class PackedXNORConv2d(_PackedMixin, nn.Module):
    """Inference-only XNOR convolution holding 1 bit per weight (see the module docstring).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as ``nn.Conv2d``.
        scale_activations: apply the paper's ``K``.

    Example:
        >>> PackedXNORConv2d(3, 4, 3, padding=1)(torch.randn(1, 3, 6, 6)).shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        bias: bool = True,
        scale_activations: bool = True,
    ):
        super().__init__()
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(int(i) for i in v)  # noqa: E731
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation = pair(padding), pair(dilation)
        self.scale_activations = scale_activations
        self.weight_shape = (out_channels, in_channels, *self.kernel_size)
        count = out_channels * in_channels * self.kernel_size[0] * self.kernel_size[1]
        self._init_buffers(count, out_channels, in_channels, bias)

    @classmethod
    def from_layer(cls, layer: XNORConv2d) -> PackedXNORConv2d:
        """The deploy form of a trained :class:`XNORConv2d` (same eval outputs)."""
        kw = {k: v for k, v in layer_kwargs(layer).items() if k not in ("groups", "padding_mode")}
        new = cls(**kw, scale_activations=layer.scale_activations)
        new._copy_from(layer)
        return new.to(layer.weight.device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_eval(self, x, self.packed(), self.alpha, self.in_scale, self.in_shift)

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        return _conv_macs(self, output)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None}, scale_activations={self.scale_activations}"
        )


class PackedXNORLinear(_PackedMixin, nn.Module):
    """Inference-only XNOR linear layer holding 1 bit per weight.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        scale_activations: apply ``K = mean |u|`` per sample.

    Example:
        >>> PackedXNORLinear(16, 4)(torch.randn(2, 16)).shape
        torch.Size([2, 4])
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, scale_activations: bool = True
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.scale_activations = scale_activations
        self.weight_shape = (out_features, in_features, 1, 1)
        self._init_buffers(out_features * in_features, out_features, in_features, bias)

    @classmethod
    def from_layer(cls, layer: XNORLinear) -> PackedXNORLinear:
        """The deploy form of a trained :class:`XNORLinear` (same eval outputs)."""
        new = cls(**layer_kwargs(layer), scale_activations=layer.scale_activations)
        new._copy_from(layer)
        return new.to(layer.weight.device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear_eval(self, x, self.packed(), self.alpha, self.in_scale, self.in_shift)

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        return output.numel() * self.in_features

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, scale_activations={self.scale_activations}"
        )


# --------------------------------------------------------------------------------------------
# Registration: checkpoints / .nns rebuild these layers; finalize makes the deploy form
# --------------------------------------------------------------------------------------------


def _train_kwargs(m: nn.Module) -> dict[str, Any]:
    kwargs = layer_kwargs(m)
    kwargs["scale_activations"] = m.scale_activations
    return kwargs


def _packed_conv_kwargs(m: PackedXNORConv2d) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": list(m.padding),
        "dilation": list(m.dilation),
        "bias": m.bias is not None,
        "scale_activations": m.scale_activations,
    }


def _packed_linear_kwargs(m: PackedXNORLinear) -> dict[str, Any]:
    return {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
        "scale_activations": m.scale_activations,
    }


register_module(XNORConv2d, _train_kwargs)
register_module(XNORLinear, _train_kwargs)
register_module(PackedXNORConv2d, _packed_conv_kwargs)
register_module(PackedXNORLinear, _packed_linear_kwargs)


def finalize_xnor(model: nn.Module) -> list[str]:
    """Replace every :class:`XNORConv2d` / :class:`XNORLinear` by its packed deploy form.

    In place; returns the names of the replaced layers. Registered as the ``"xnor"`` finalizer,
    so :func:`nnshrink.finalize` calls it.
    """
    names = []
    for name, m in list(model.named_modules()):
        if isinstance(m, XNORConv2d | XNORLinear):
            cls = PackedXNORConv2d if isinstance(m, XNORConv2d) else PackedXNORLinear
            if not name:
                raise ValueError("finalize: pass a container model, not a bare XNOR layer")
            set_submodule(model, name, cls.from_layer(m))
            names.append(name)
    return names


register_finalizer("xnor", finalize_xnor)
