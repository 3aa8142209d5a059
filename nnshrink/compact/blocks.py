"""Compact convolution blocks, each a drop-in for a given ``nn.Conv2d`` (same output shape).

* :class:`DepthwiseSeparableConv` (MobileNet, Howard et al. 2017): depthwise k x k (carries the
  stride, padding and dilation) → optional BN + ReLU → pointwise 1x1.
* :class:`FireConv` (SqueezeNet, Iandola et al. 2016): squeeze 1x1 → ReLU → [expand 1x1, expand
  k x k] concatenated along channels.
* :class:`ShuffleConv` (ShuffleNet, Zhang et al. 2018): grouped k x k conv → channel shuffle, so
  that the next grouped layer sees channels from every group.
* :class:`FactorizedConv` (Inception v3, Szegedy et al. 2016): k x 1 → optional BN + ReLU → 1 x k.

The blocks are built from standard ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.ReLU`` children, so
:func:`nnshrink.metrics.count_macs` counts them without help. Every block has a ``from_conv``
constructor that reads channels, kernel, stride, padding, dilation and bias from the conv it
replaces. No block ends with a non-linearity: the host model's own BN/ReLU after the replaced
conv still applies.
"""

from __future__ import annotations

import torch
from torch import nn

from ..io import register_module

Pair = tuple[int, int]


def _pair(value: int | tuple[int, ...]) -> Pair:
    if isinstance(value, int):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair, got {value!r}")
    return (int(value[0]), int(value[1]))


def _plain_kwargs(args: dict) -> dict:
    """Constructor arguments as JSON-able values (tuples → lists), for checkpoint rebuilds."""
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in args.items()
        if k not in ("self", "__class__")
    }


def conv_geometry(conv: nn.Conv2d) -> dict:
    """Return the constructor arguments shared by every block, read from ``conv``.

    Raises ``ValueError`` for convs no block can stand in for (string padding, non-zero padding
    modes), naming the fix.
    """
    if isinstance(conv.padding, str):
        raise ValueError(
            f"padding={conv.padding!r} is not supported; use integer padding on the conv"
        )
    if conv.padding_mode != "zeros":
        raise ValueError(f"padding_mode={conv.padding_mode!r} is not supported (only 'zeros')")
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": _pair(conv.kernel_size),
        "stride": _pair(conv.stride),
        "padding": _pair(conv.padding),
        "dilation": _pair(conv.dilation),
        "bias": conv.bias is not None,
    }


def conv_output_size(size: Pair, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair) -> Pair:
    """Spatial output size of a convolution (PyTorch's floor formula), per dimension."""
    return tuple(  # type: ignore[return-value]
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, k, st, p, d in zip(size, kernel, stride, padding, dilation)
    )


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k x k conv → (BN → ReLU) → pointwise 1x1 conv.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation: as for ``nn.Conv2d``;
            the depthwise conv takes the spatial arguments, so the output shape matches.
        bias: whether the pointwise conv has a bias (the depthwise conv never does when BN
            follows it).
        bn_relu: put BatchNorm + ReLU between the two convs (MobileNet does); without it the block
            is a linear factorization of the dense conv.

    Example:
        >>> block = DepthwiseSeparableConv(32, 64, 3, padding=1)
        >>> block(torch.zeros(1, 32, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Pair = 3,
        stride: int | Pair = 1,
        padding: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
        bn_relu: bool = True,
    ) -> None:
        super().__init__()
        self.init_kwargs = _plain_kwargs(locals())
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, dilation,
            groups=in_channels, bias=not bn_relu,
        )  # fmt: skip
        self.bn = nn.BatchNorm2d(in_channels) if bn_relu else nn.Identity()
        self.relu = nn.ReLU(inplace=True) if bn_relu else nn.Identity()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, bn_relu: bool = True) -> DepthwiseSeparableConv:
        """Build the block that stands in for ``conv`` (same in/out channels and geometry)."""
        return cls(**conv_geometry(conv), bn_relu=bn_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.relu(self.bn(self.depthwise(x))))


class FireConv(nn.Module):
    """SqueezeNet fire module as a drop-in conv: squeeze 1x1 → ReLU → cat(expand 1x1, expand k x k).

    The k x k expand branch takes the replaced conv's kernel, stride, padding and dilation. The
    1x1 expand branch takes the same stride, and pads (or crops) by ``padding - dilation*(k-1)/2``
    so both branches sample the same output grid; this needs an odd kernel.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as for
            ``nn.Conv2d``.
        squeeze_ratio: squeeze channels = ``max(1, round(squeeze_ratio * out_channels))``
            (SqueezeNet's SR; the paper uses 0.125 to 0.75).
        expand3x3_ratio: share of the output channels from the k x k branch (paper: 0.5).

    Example:
        >>> FireConv(64, 128, 3, padding=1)(torch.zeros(1, 64, 8, 8)).shape
        torch.Size([1, 128, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Pair = 3,
        stride: int | Pair = 1,
        padding: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
        squeeze_ratio: float = 0.25,
        expand3x3_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        self.init_kwargs = _plain_kwargs(locals())
        kernel, dil, pad = _pair(kernel_size), _pair(dilation), _pair(padding)
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"FireConv needs an odd kernel, got {kernel}")
        if out_channels < 2:
            raise ValueError("FireConv needs out_channels >= 2 (two expand branches)")
        squeeze = max(1, round(squeeze_ratio * out_channels))
        e3 = min(out_channels - 1, max(1, round(expand3x3_ratio * out_channels)))
        e1 = out_channels - e3
        # offset of the 1x1 branch's grid relative to the k x k branch's: pad if >= 0, crop if < 0
        offset = tuple(p - d * (k - 1) // 2 for p, d, k in zip(pad, dil, kernel))
        self.crop = tuple(max(0, -o) for o in offset)
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.squeeze_relu = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(
            squeeze, e1, 1, stride, tuple(max(0, o) for o in offset), bias=bias
        )
        self.expand3x3 = nn.Conv2d(squeeze, e3, kernel, stride, pad, dil, bias=bias)

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, squeeze_ratio: float = 0.25, expand3x3_ratio: float = 0.5
    ) -> FireConv:
        """Build the block that stands in for ``conv``."""
        return cls(
            **conv_geometry(conv), squeeze_ratio=squeeze_ratio, expand3x3_ratio=expand3x3_ratio
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_relu(self.squeeze(x))
        ch, cw = self.crop
        s1 = s[:, :, ch : s.shape[2] - ch, cw : s.shape[3] - cw] if ch or cw else s
        return torch.cat([self.expand1x1(s1), self.expand3x3(s)], dim=1)


class ChannelShuffle(nn.Module):
    """Permute channels so that each of ``groups`` output groups holds channels from every group.

    Channel ``g * (C/groups) + i`` moves to position ``i * groups + g`` (ShuffleNet's
    reshape → transpose → flatten).

    Example:
        >>> ChannelShuffle(2)(torch.arange(4.0).view(1, 4, 1, 1)).flatten().tolist()
        [0.0, 2.0, 1.0, 3.0]
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleConv(nn.Module):
    """Grouped k x k conv followed by a channel shuffle (ShuffleNet's group conv + shuffle).

    Params and MACs are ``1/groups`` of the dense conv's; the shuffle makes a stack of such layers
    mix information across groups.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as for
            ``nn.Conv2d``; both channel counts must be divisible by ``groups``.
        groups: number of groups (ShuffleNet uses 1-8).

    Example:
        >>> ShuffleConv(32, 64, 3, padding=1, groups=4)(torch.zeros(1, 32, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Pair = 3,
        stride: int | Pair = 1,
        padding: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
        groups: int = 4,
    ) -> None:
        super().__init__()
        self.init_kwargs = _plain_kwargs(locals())
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"ShuffleConv: in_channels={in_channels} and out_channels={out_channels} must be "
                f"divisible by groups={groups}; choose another groups value"
            )
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        self.shuffle = ChannelShuffle(groups)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, *, groups: int = 4) -> ShuffleConv:
        """Build the block that stands in for ``conv``."""
        return cls(**conv_geometry(conv), groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


class FactorizedConv(nn.Module):
    """Asymmetric factorization k x k → (k x 1) → (BN → ReLU) → (1 x k), as in Inception v3.

    The k x 1 conv takes the vertical stride/padding/dilation, the 1 x k conv the horizontal
    ones, so the output shape matches the replaced conv exactly.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, bias: as for
            ``nn.Conv2d``.
        mid_channels: channels between the two convs (default ``min(in_channels, out_channels)``;
            Inception v3's factorized layers have in = mid = out).
        bn_relu: BatchNorm + ReLU between the two convs (Inception v3 has it).

    Example:
        >>> FactorizedConv(16, 16, 3, padding=1)(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 16, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Pair = 3,
        stride: int | Pair = 1,
        padding: int | Pair = 0,
        dilation: int | Pair = 1,
        bias: bool = True,
        mid_channels: int | None = None,
        bn_relu: bool = True,
    ) -> None:
        super().__init__()
        self.init_kwargs = _plain_kwargs(locals())
        kh, kw = _pair(kernel_size)
        sh, sw = _pair(stride)
        ph, pw = _pair(padding)
        dh, dw = _pair(dilation)
        mid = min(in_channels, out_channels) if mid_channels is None else mid_channels
        self.vertical = nn.Conv2d(
            in_channels, mid, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=not bn_relu
        )
        self.bn = nn.BatchNorm2d(mid) if bn_relu else nn.Identity()
        self.relu = nn.ReLU(inplace=True) if bn_relu else nn.Identity()
        self.horizontal = nn.Conv2d(
            mid, out_channels, (1, kw), (1, sw), (0, pw), (1, dw), bias=bias
        )

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, *, mid_channels: int | None = None, bn_relu: bool = True
    ) -> FactorizedConv:
        """Build the block that stands in for ``conv``."""
        return cls(**conv_geometry(conv), mid_channels=mid_channels, bn_relu=bn_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.horizontal(self.relu(self.bn(self.vertical(x))))


BLOCKS: dict[str, type[nn.Module]] = {
    "dwsep": DepthwiseSeparableConv,
    "fire": FireConv,
    "shuffle": ShuffleConv,
    "factorized": FactorizedConv,
}

# checkpoints rebuild edited models from constructor kwargs (see nnshrink.io.arch)
for _cls in (DepthwiseSeparableConv, FireConv, ShuffleConv, FactorizedConv):
    register_module(_cls, lambda m: dict(m.init_kwargs))
register_module(ChannelShuffle, lambda m: {"groups": m.groups})
