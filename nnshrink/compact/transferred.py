"""Transferred convolutional filters: filter banks generated from a smaller learned set.

* :class:`CReLUConv2d` (Shang et al. 2016, "Understanding and Improving CNNs via Concatenated
  ReLUs"): learns ``out_channels / 2`` filters and outputs ``cat(conv(x), -conv(x))``; the ReLU
  that follows in the host model turns it into CReLU. Half the parameters and MACs of a dense conv
  with the same output width. ``ordered=True`` adds a fixed output channel order, so a layer
  fitted to a trained conv can keep that conv's channel order.
* :class:`RotationConv2d`: a drop-in for an ``nn.Conv2d`` with ``out_channels`` outputs whose
  filter bank is ``out_channels / 4`` learned filters, each used at 0/90/180/270° (the sharing of
  Cohen & Welling's p4 lifting layer). 4x fewer weights, the same MACs as the dense conv.
* :class:`P4LiftingConv2d` (Cohen & Welling 2016, group-equivariant CNNs): lifts an image (Z2)
  to the rotation group p4. Each learned filter is used at 0/90/180/270°, so 4x the output
  channels for the parameters of one.
* :class:`P4GroupConv2d`: p4 → p4 group convolution, each filter rotated and its rotation axis
  cyclically shifted. With :func:`p4_pool` (max over rotations) the features become invariant.

p4 feature maps are stored as ordinary ``(N, C * 4, H, W)`` tensors, channel ``c * 4 + r`` holding
rotation ``r`` of feature ``c``, so these layers drop into standard CNNs. Rotating the input by 90°
(``torch.rot90(x, 1, (2, 3))``) rotates every output map the same way and shifts ``r`` by one.
That holds exactly for stride 1, "same" padding (``kernel_size // 2``) and an odd kernel.

Filters are rotated with :func:`rot90_filters` (flips and transposes, which the TorchScript ONNX
exporter knows; ``torch.rot90`` it does not), so every layer here exports to ONNX, where ONNX
Runtime folds the rotated bank into a constant when the session loads (the exporter's own
constant folding already stores some rotations expanded, so the ONNX file is larger than the
learned bank; ``.nns`` stores the learned bank alone).

All layers call ``F.conv2d`` and so define ``macs(inputs, output)`` for
:func:`nnshrink.metrics.count_macs`, and ``param_saving()`` to report what the sharing saves.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..io import register_module
from .blocks import _pair


def _saving(params: int, dense_params: int) -> dict[str, float]:
    return {
        "params": params,
        "dense_params": dense_params,
        "ratio": dense_params / params if params else float("inf"),
    }


def _tracing() -> bool:
    """Whether a tracer or compiler is recording the forward (then the bank is always rebuilt,
    so that the recorded graph holds the rotations, not a constant)."""
    return (
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.fx._symbolic_trace.is_fx_symbolic_tracing()
    )


def cached_bank(module: nn.Module, build, sources: tuple[torch.Tensor | None, ...]):
    """``build()``'s result, rebuilt only when a tensor it is made from changed (eval only).

    Why: a rotation bank is four flips/transposes of the learned filters and a gather, rebuilt
    on every call; in eager inference on small inputs that costs as much as the convolution.
    In eval mode without autograd the result is kept, keyed by each source tensor's storage
    address, version counter (bumped by every in-place write: optimiser steps, ``copy_``,
    ``load_state_dict``), shape and dtype/device; training, autograd, tracing and export rebuild
    it every call.

    Args:
        module: the layer (the cache lives in its ``__dict__``, so it is never saved).
        build: ``() -> value`` (a tensor or a tuple of tensors).
        sources: the tensors ``build`` reads.
    """
    live = [t for t in sources if t is not None]
    if (
        module.training
        or (torch.is_grad_enabled() and any(t.requires_grad for t in live))
        or _tracing()
    ):
        return build()
    try:
        key = tuple(
            (t.data_ptr(), t._version, tuple(t.shape), t.stride(), t.dtype, t.device) for t in live
        )
    except (RuntimeError, NotImplementedError):  # fake/meta-like tensors: nothing to key on
        return build()
    cached = module.__dict__.get("_bank_cache")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, build())
        module.__dict__["_bank_cache"] = cached
    return cached[1]


def _init_(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    # the same initialisation nn.Conv2d uses (kaiming uniform with a=sqrt(5))
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        nn.init.uniform_(bias, -bound, bound)


def rot90_filters(weight: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``torch.rot90(weight, k, dims=(-2, -1))`` spelled with flips and transposes.

    The same values as ``torch.rot90`` (tested), but exportable by the TorchScript ONNX exporter.

    Example:
        >>> w = torch.arange(4.0).view(1, 1, 2, 2)
        >>> torch.equal(rot90_filters(w, 3), torch.rot90(w, 3, dims=(2, 3)))
        True
    """
    k %= 4
    if k == 1:
        return weight.flip(-1).transpose(-2, -1)
    if k == 2:
        return weight.flip(-2).flip(-1)
    if k == 3:
        return weight.transpose(-2, -1).flip(-1)
    return weight


class CReLUConv2d(nn.Module):
    """Conv layer with ``out_channels / 2`` learned filters whose negations give the other half.

    Output: ``cat(conv(x), -conv(x))`` along channels (bias included in the negated half). Follow
    it with a ReLU to get CReLU (Shang et al. 2016). With ``ordered=True`` the concatenation is
    then reordered by the ``channel_order`` buffer (output channel ``c`` is concatenated channel
    ``channel_order[c]``): how :class:`~nnshrink.compact.CompactReplace` keeps a trained conv's
    channel order when it cannot move the order into the layers that read it.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as for
            ``nn.Conv2d``; ``out_channels`` must be even.
        ordered: hold a ``channel_order`` buffer (identity until set) and apply it.

    Example:
        >>> layer = CReLUConv2d(3, 64, 3, padding=1)
        >>> layer(torch.zeros(1, 3, 8, 8)).shape, layer.param_saving()["ratio"]
        (torch.Size([1, 64, 8, 8]), 2.0)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        ordered: bool = False,
    ) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"CReLUConv2d needs an even out_channels, got {out_channels}")
        if in_channels % groups or (out_channels // 2) % groups:
            raise ValueError(
                f"in_channels={in_channels} and out_channels/2={out_channels // 2} must be "
                f"divisible by groups={groups}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.weight = nn.Parameter(
            torch.empty(out_channels // 2, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels // 2)) if bias else None
        self.channel_order: torch.Tensor | None
        if ordered:
            self.register_buffer("channel_order", torch.arange(out_channels))
        else:
            self.channel_order = None
        _init_(self.weight, self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, ordered: bool = False) -> CReLUConv2d:
        """A (randomly initialised) layer with ``conv``'s channels, geometry and bias flag.

        Example:
            >>> CReLUConv2d.from_conv(nn.Conv2d(8, 16, 3, padding=1)).weight.shape
            torch.Size([8, 8, 3, 3])
        """
        return cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, ordered,
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )
        out = torch.cat([y, -y], dim=1)
        if self.channel_order is not None:
            out = out.index_select(1, self.channel_order)
        return out

    def macs(self, inputs, output: torch.Tensor) -> int:
        """Only the learned half is convolved; the negation is free (counted as 0)."""
        per_output = (self.in_channels // self.groups) * math.prod(self.kernel_size)
        return output.numel() // 2 * per_output

    def param_saving(self) -> dict[str, float]:
        """Parameters of this layer vs a dense ``nn.Conv2d`` with the same output width."""
        dense = self.out_channels * self.weight[0].numel()
        dense += self.out_channels if self.bias is not None else 0
        return _saving(sum(p.numel() for p in self.parameters()), dense)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels} (learned {self.out_channels // 2}), "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
            + (", ordered" if self.channel_order is not None else "")
        )


class RotationConv2d(nn.Module):
    """Drop-in for a square-kernel ``nn.Conv2d``: ``out_channels / 4`` filters at 4 rotations.

    What is shared: learned filter ``o`` (all input channels, ``k x k``) and its rotations by 90,
    180 and 270° (:func:`rot90_filters`) form four output channels, with one bias shared by the
    four. The input channels are an ordinary image stack (as for Cohen & Welling's p4 *lifting*
    layer), not a p4 map, so stacking these layers shares weights but does not make the network
    rotation-equivariant. The expanded bank has the dense conv's shape, so the MACs are the dense
    conv's; the saving is 4x fewer weights. Output channel ``c`` comes from bank entry
    ``channel_order[c]``, entry ``o * 4 + r`` being filter ``o`` rotated ``r`` times; reordering
    the bank is free, so a layer fitted to a trained conv keeps that conv's channel order.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as for
            ``nn.Conv2d``; the kernel and dilation must be square, ``out_channels`` a multiple of 4.

    Example:
        >>> layer = RotationConv2d(8, 16, 3, padding=1)
        >>> layer(torch.zeros(1, 8, 5, 5)).shape, layer.param_saving()["ratio"]
        (torch.Size([1, 16, 5, 5]), 4.0)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kernel, dil = _pair(kernel_size), _pair(dilation)
        if kernel[0] != kernel[1] or dil[0] != dil[1]:
            raise ValueError(
                f"RotationConv2d needs a square kernel and dilation, got kernel_size={kernel} "
                f"and dilation={dil}"
            )
        if out_channels % 4:
            raise ValueError(
                f"RotationConv2d needs out_channels divisible by 4, got {out_channels}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel, _pair(stride)
        self.padding, self.dilation = _pair(padding), dil
        self.weight = nn.Parameter(torch.empty(out_channels // 4, in_channels, *kernel))
        self.bias = nn.Parameter(torch.empty(out_channels // 4)) if bias else None
        self.register_buffer("channel_order", torch.arange(out_channels))
        _init_(self.weight, self.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> RotationConv2d:
        """A (randomly initialised) layer with ``conv``'s channels, geometry and bias flag.

        Example:
            >>> RotationConv2d.from_conv(nn.Conv2d(8, 16, 3, padding=1)).weight.shape
            torch.Size([4, 8, 3, 3])
        """
        if conv.groups != 1:
            raise ValueError(f"RotationConv2d stands in for groups=1 convs, got {conv.groups}")
        return cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.bias is not None,
        )  # fmt: skip

    def filter_bank(self) -> torch.Tensor:
        """The ``(out_channels, in_channels, k, k)`` weight ``F.conv2d`` uses, in output order."""
        bank = torch.stack([rot90_filters(self.weight, r) for r in range(4)], dim=1)
        bank = bank.reshape(self.out_channels, self.in_channels, *self.kernel_size)
        return bank.index_select(0, self.channel_order)

    def full_bias(self) -> torch.Tensor | None:
        """The per-output-channel bias (each learned bias repeated for its 4 rotations)."""
        if self.bias is None:
            return None
        return self.bias.repeat_interleave(4).index_select(0, self.channel_order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bank, bias = cached_bank(
            self,
            lambda: (self.filter_bank(), self.full_bias()),
            (self.weight, self.bias, self.channel_order),
        )
        return F.conv2d(x, bank, bias, self.stride, self.padding, self.dilation)

    def macs(self, inputs, output: torch.Tensor) -> int:
        """Every rotated filter is convolved: the dense conv's MACs."""
        return output.numel() * self.in_channels * math.prod(self.kernel_size)

    def param_saving(self) -> dict[str, float]:
        """Parameters vs the dense ``nn.Conv2d`` this layer stands in for."""
        dense = 4 * self.weight.numel() + (self.out_channels if self.bias is not None else 0)
        return _saving(sum(p.numel() for p in self.parameters()), dense)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels} (learned {self.out_channels // 4} x 4 "
            f"rotations), kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
        )


def rotate_p4(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The action of rotation ``k`` x 90° on a p4 feature map ``(N, C*4, H, W)``.

    Rotates every map spatially and shifts the rotation axis ``r → r + k (mod 4)``; the
    equivariance property of the p4 layers is ``layer(rot90(x)) == rotate_p4(layer(x))``.

    Example:
        >>> x = torch.randn(1, 8, 5, 5)
        >>> torch.equal(rotate_p4(rotate_p4(x, 2), 2), x)
        True
    """
    y = torch.rot90(x, k, dims=(2, 3))
    n, c4, h, w = y.shape
    y = y.reshape(n, c4 // 4, 4, h, w)
    return torch.roll(y, shifts=k, dims=2).reshape(n, c4, h, w)


def p4_pool(x: torch.Tensor) -> torch.Tensor:
    """Max over the 4 rotations of a p4 feature map: ``(N, C*4, H, W) → (N, C, H, W)``."""
    n, c4, h, w = x.shape
    return x.view(n, c4 // 4, 4, h, w).amax(dim=2)


class _P4Base(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        padding: int,
        bias: bool,
        in_rotations: int,
    ) -> None:
        super().__init__()
        if not isinstance(kernel_size, int):
            raise ValueError(f"p4 layers need a square kernel (an int), got {kernel_size!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.in_rotations = in_rotations
        shape = (out_channels, in_channels, *((in_rotations,) if in_rotations > 1 else ()))
        self.weight = nn.Parameter(torch.empty(*shape, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init_(self.weight, self.bias)

    def filter_bank(self) -> torch.Tensor:
        """The expanded ``(out*4, in*in_rotations, k, k)`` weight used by ``F.conv2d``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.in_channels * self.in_rotations
        if x.shape[1] != expected:
            raise ValueError(
                f"{type(self).__name__} expects {expected} input channels, got {x.shape[1]}"
            )
        bank, bias = cached_bank(
            self,
            lambda: (
                self.filter_bank(),
                None if self.bias is None else self.bias.repeat_interleave(4),
            ),
            (self.weight, self.bias),
        )
        return F.conv2d(x, bank, bias, self.stride, self.padding)

    def macs(self, inputs, output: torch.Tensor) -> int:
        """Every one of the 4x rotated filters is convolved: a dense conv's MACs."""
        return output.numel() * self.in_channels * self.in_rotations * self.kernel_size**2

    def param_saving(self) -> dict[str, float]:
        """Parameters vs a dense conv with the same (4x) output channels and input channels."""
        dense = 4 * self.weight.numel() + (4 * self.out_channels if self.bias is not None else 0)
        return _saving(sum(p.numel() for p in self.parameters()), dense)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}x{self.in_rotations}, {self.out_channels}x4, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
        )


class P4LiftingConv2d(_P4Base):
    """Z2 → p4 lifting convolution: each learned filter applied at 0/90/180/270°.

    Output ``(N, out_channels * 4, H', W')``, channel ``o * 4 + r`` from filter ``o`` rotated by
    ``r`` x 90°. The bias is shared by the 4 rotations (it must be, for equivariance).

    Args:
        in_channels: image channels.
        out_channels: learned filters (the layer outputs 4x as many channels).
        kernel_size: square kernel side (odd for exact equivariance).
        stride, padding: as for ``nn.Conv2d`` (stride 1 and padding ``k // 2`` for exactness).
        bias: learn one bias per filter.

    Example:
        >>> layer = P4LiftingConv2d(1, 8, 3, padding=1)
        >>> layer(torch.zeros(2, 1, 9, 9)).shape, layer.param_saving()["ratio"]
        (torch.Size([2, 32, 9, 9]), 4.0)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, 1)

    def filter_bank(self) -> torch.Tensor:
        bank = torch.stack([rot90_filters(self.weight, r) for r in range(4)], dim=1)
        return bank.reshape(self.out_channels * 4, self.in_channels, *self.weight.shape[-2:])


class P4GroupConv2d(_P4Base):
    """p4 → p4 group convolution (Cohen & Welling 2016, eq. 10-11).

    Input and output are p4 maps ``(N, C*4, H, W)``. The filter for output rotation ``r`` is the
    learned filter rotated spatially by ``r`` x 90° with its input-rotation axis shifted by ``r``.

    Args:
        in_channels: input features (the input has ``in_channels * 4`` channels).
        out_channels: output features (the output has ``out_channels * 4`` channels).
        kernel_size, stride, padding, bias: as for :class:`P4LiftingConv2d`.

    Example:
        >>> layer = P4GroupConv2d(8, 8, 3, padding=1)
        >>> layer(torch.zeros(1, 32, 9, 9)).shape
        torch.Size([1, 32, 9, 9])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias, 4)

    def filter_bank(self) -> torch.Tensor:
        # weight: (out, in, s, k, k); output rotation r uses rot^r of the filter with s -> s - r
        bank = torch.stack(
            [rot90_filters(torch.roll(self.weight, r, dims=2), r) for r in range(4)],
            dim=1,
        )
        k = self.kernel_size
        return bank.reshape(self.out_channels * 4, self.in_channels * 4, k, k)


# checkpoints rebuild models holding these layers from constructor kwargs (see nnshrink.io.arch)
_GEOMETRY = ("kernel_size", "stride", "padding", "dilation")
register_module(
    CReLUConv2d,
    lambda m: {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        **{key: list(getattr(m, key)) for key in _GEOMETRY},
        "groups": m.groups,
        "bias": m.bias is not None,
        "ordered": m.channel_order is not None,
    },
)
register_module(
    RotationConv2d,
    lambda m: {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        **{key: list(getattr(m, key)) for key in _GEOMETRY},
        "bias": m.bias is not None,
    },
)
for _cls in (P4LiftingConv2d, P4GroupConv2d):
    register_module(
        _cls,
        lambda m: {
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "kernel_size": m.kernel_size,
            "stride": m.stride,
            "padding": m.padding,
            "bias": m.bias is not None,
        },
    )

#: the transferred blocks :class:`~nnshrink.compact.CompactReplace` can put in place of a conv
TRANSFERRED_BLOCKS: dict[str, type[nn.Module]] = {"crelu": CReLUConv2d, "rotation": RotationConv2d}
