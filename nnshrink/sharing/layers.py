"""Shared-weight layers: ``weight = codebook[indices] * mask`` (k-means weight sharing's form).

:class:`SharedWeightLinear` and :class:`SharedWeightConv2d` hold a trainable ``codebook``
(``nn.Parameter``, ``2**bits`` floats), ``indices`` (uint8) and ``mask`` (bool) buffers. Training
the model as usual fine-tunes the shared values: the backward of the gather sums each centroid's
members' gradients, exactly as Deep Compression describes; the indices never change and pruned
weights stay zero through any optimizer step. :func:`strip_sharing` turns them back into plain
``nn.Linear`` / ``nn.Conv2d``; :func:`codebook_of` recovers ``(codebook, indices, mask)`` from
either form. The config that builds them is :class:`nnshrink.sharing.kmeans.WeightSharing`.

Example:
    >>> layer = SharedWeightLinear.from_linear(nn.Linear(16, 4), bits=2)
    >>> layer.codebook.numel(), layer.represented_params()["params"]
    (4, 72)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import set_submodule
from ..io import layer_kwargs, register_module
from .clustering import InitMethod, kmeans_1d

__all__ = [
    "SharedWeightConv2d",
    "SharedWeightLinear",
    "codebook_of",
    "is_shared",
    "share_weights",
    "strip_sharing",
]


class _CodebookGather(torch.autograd.Function):
    """``codebook[indices]`` whose backward sums each centroid's gradient in a fixed order.

    Autograd's own backward of the gather is a parallel scatter-add: with more than one thread
    the summation order (and so the float result) changes from run to run, which made centroid
    fine-tuning irreproducible. ``bincount`` with float64 weights is sequential and exact enough.
    """

    @staticmethod
    def forward(ctx: Any, codebook: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.size = codebook.numel()
        return codebook[indices]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (indices,) = ctx.saved_tensors
        sums = torch.bincount(indices.reshape(-1), weights=grad.reshape(-1).double(),
                              minlength=ctx.size)  # fmt: skip
        return sums.to(grad.dtype), None


class _SharedWeight(nn.Module):
    """Common state of the shared-weight layers: ``weight = codebook[indices] * mask``."""

    bits: int

    def _init_sharing(self, shape: tuple[int, ...], bits: int, bias: bool, out: int) -> None:
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be in 1..8 (uint8 indices), got {bits}")
        self.bits = bits
        self.codebook = nn.Parameter(torch.zeros(2**bits))
        self.register_buffer("indices", torch.zeros(shape, dtype=torch.uint8))
        self.register_buffer("mask", torch.ones(shape, dtype=torch.bool))
        self.register_parameter("bias", nn.Parameter(torch.zeros(out)) if bias else None)

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight the layer computes with (differentiable w.r.t. ``codebook``)."""
        gathered = _CodebookGather.apply(self.codebook, self.indices.long())
        return gathered * self.mask.to(self.codebook.dtype)

    @torch.no_grad()
    def represented_params(self) -> dict[str, int]:
        """The parameters this layer stands for, as ``nnshrink.metrics`` should count them.

        Its own ``nn.Parameter`` s are only the codebook and the bias, but every weight is still
        there as an index: ``params`` = one per weight (``indices``) + codebook entries + bias,
        ``nonzero_params`` = unmasked weights + non-zero codebook entries + non-zero bias. Dense
        fp32 bytes are ``4 * params``: sharing saves bits per weight (seen in the ``.nns`` file),
        not parameters.

        Example:
            >>> share_weights(nn.Linear(4, 2), bits=1).represented_params()
            {'params': 12, 'nonzero_params': 12}
        """
        bias = self.bias if self.bias is not None else torch.zeros(0)
        params = self.indices.numel() + self.codebook.numel() + bias.numel()
        nonzero = int(self.mask.sum()) + int((self.codebook != 0).sum()) + int((bias != 0).sum())
        return {"params": params, "nonzero_params": nonzero}

    @torch.no_grad()
    def set_sharing(
        self, codebook: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor | None = None
    ) -> None:
        """Load a codebook (length <= ``2**bits``; padded with zeros), indices and mask."""
        if codebook.numel() > self.codebook.numel():
            raise ValueError(
                f"codebook has {codebook.numel()} entries; this layer holds {2**self.bits}"
            )
        self.codebook.zero_()
        self.codebook[: codebook.numel()] = codebook.to(self.codebook)
        self.indices.copy_(indices.to(torch.uint8).reshape(self.indices.shape))
        if mask is not None:
            self.mask.copy_(mask.to(torch.bool).reshape(self.mask.shape))


class SharedWeightLinear(_SharedWeight):
    """``nn.Linear`` whose weight is ``codebook[indices] * mask`` (k-means weight sharing).

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        bits: index width; the codebook has ``2**bits`` trainable entries.

    Example:
        >>> layer = SharedWeightLinear.from_linear(nn.Linear(16, 4), bits=2)
        >>> layer.codebook.shape, layer(torch.zeros(3, 16)).shape
        (torch.Size([4]), torch.Size([3, 4]))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 5):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self._init_sharing((out_features, in_features), bits, bias, out_features)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        bits: int = 5,
        init: InitMethod = "linear",
        iterations: int = 100,
        seed: int = 0,
    ) -> SharedWeightLinear:
        """Cluster ``linear``'s weights (non-zero ones only) and build the shared layer."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, bits)
        _fill_from(new, linear, init, iterations, seed)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the shared values."""
        out = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        return _copy_into(out, self)

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        return output.numel() * self.in_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}"


class SharedWeightConv2d(_SharedWeight):
    """``nn.Conv2d`` (zero padding) whose weight is ``codebook[indices] * mask``.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``nn.Conv2d``.
        bits: index width; the codebook has ``2**bits`` trainable entries.

    Example:
        >>> layer = SharedWeightConv2d.from_conv(nn.Conv2d(3, 8, 3, padding=1), bits=4)
        >>> layer(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        bits: int = 8,
    ):
        super().__init__()
        pair = nn.modules.utils._pair
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.dilation = pair(dilation)
        self.groups = groups
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self._init_sharing(shape, bits, bias, out_channels)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        bits: int = 8,
        init: InitMethod = "linear",
        iterations: int = 100,
        seed: int = 0,
    ) -> SharedWeightConv2d:
        """Cluster ``conv``'s weights (non-zero ones only) and build the shared layer."""
        if conv.padding_mode != "zeros":
            raise ValueError(
                f"SharedWeightConv2d supports padding_mode='zeros' only, got {conv.padding_mode!r}"
            )
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
            conv.bias is not None,
            bits,
        )
        _fill_from(new, conv, init, iterations, seed)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def to_conv(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` holding the shared values."""
        out = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            self.bias is not None,
        )
        return _copy_into(out, self)

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        k = self.kernel_size[0] * self.kernel_size[1]
        return output.numel() * (self.in_channels // self.groups) * k

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bits={self.bits}"
        )


@torch.no_grad()
def _fill_from(new: _SharedWeight, old: nn.Module, init: InitMethod, iters: int, seed: int):
    weight = old.weight.detach()
    mask = weight != 0
    centroids, labels = kmeans_1d(weight[mask], 2**new.bits, init=init, iterations=iters, seed=seed)
    indices = torch.zeros(weight.shape, dtype=torch.uint8, device=weight.device)
    indices[mask] = labels.to(torch.uint8).to(weight.device)
    new.to(device=weight.device)
    new.codebook.data = new.codebook.data.to(weight.dtype)
    new.set_sharing(centroids.to(weight), indices, mask)
    if old.bias is not None:
        new.bias.data = old.bias.detach().clone()


@torch.no_grad()
def _copy_into(plain: nn.Module, shared: _SharedWeight) -> nn.Module:
    plain.to(device=shared.codebook.device, dtype=shared.codebook.dtype)
    plain.weight.copy_(shared.weight)
    if shared.bias is not None:
        plain.bias.copy_(shared.bias)
    return plain


def share_weights(
    module: nn.Module,
    bits: int,
    init: InitMethod = "linear",
    iterations: int = 100,
    seed: int = 0,
) -> _SharedWeight:
    """Return the shared-weight version of an ``nn.Linear`` or ``nn.Conv2d``.

    Example:
        >>> share_weights(nn.Linear(4, 2), bits=1).codebook.numel()
        2
    """
    if type(module) is nn.Linear:
        return SharedWeightLinear.from_linear(module, bits, init, iterations, seed)
    if type(module) is nn.Conv2d:
        return SharedWeightConv2d.from_conv(module, bits, init, iterations, seed)
    raise TypeError(f"weight sharing supports nn.Linear and nn.Conv2d, got {type(module).__name__}")


def strip_sharing(model: nn.Module) -> nn.Module:
    """Replace every shared-weight layer by a plain ``nn.Linear``/``nn.Conv2d`` (in place).

    Returns ``model`` (or the plain replacement when ``model`` itself is a shared layer). The
    stripped layers hold only the shared values, so :func:`codebook_of` still recovers the codebook.

    Example:
        >>> m = nn.Sequential(share_weights(nn.Linear(4, 2), bits=1))
        >>> type(strip_sharing(m)[0]).__name__
        'Linear'
    """
    if isinstance(model, _SharedWeight):
        return _plain(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, _SharedWeight):
            set_submodule(model, name, _plain(module))
    return model


def _plain(module: _SharedWeight) -> nn.Module:
    return module.to_linear() if isinstance(module, SharedWeightLinear) else module.to_conv()


@torch.no_grad()
def codebook_of(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codebook, indices uint8, mask bool)`` with ``weight == codebook[indices] * mask``.

    Works for shared-weight layers (the trained codebook, ``2**bits`` entries) and for plain
    layers with at most 256 distinct non-zero weights, e.g. after :func:`strip_sharing` (the sorted
    distinct non-zero values). Pruned (zero) weights have ``mask == False`` and index 0.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> _ = lin.weight.data.copy_(torch.tensor([[0.5, 0.0], [-1.0, 0.5]]))
        >>> cb, idx, mask = codebook_of(lin)
        >>> cb.tolist(), idx.tolist(), mask.tolist()
        ([-1.0, 0.5], [[1, 0], [0, 1]], [[True, False], [True, True]])
    """
    if isinstance(module, _SharedWeight):
        return module.codebook.detach().clone(), module.indices.clone(), module.mask.clone()
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight tensor to read a codebook from")
    w = weight.detach()
    mask = w != 0
    codebook = torch.unique(w[mask])
    if codebook.numel() > 256:
        raise ValueError(
            f"{type(module).__name__} has {codebook.numel()} distinct non-zero weights; a codebook "
            "holds at most 256 (apply WeightSharing(bits<=8) first)"
        )
    indices = torch.zeros(w.shape, dtype=torch.uint8, device=w.device)
    indices[mask] = torch.searchsorted(codebook, w[mask]).to(torch.uint8)
    return codebook, indices, mask


def is_shared(module: nn.Module) -> bool:
    """Whether ``module`` is a shared-weight layer (k-means codebook form)."""
    return isinstance(module, _SharedWeight)


for _cls in (SharedWeightLinear, SharedWeightConv2d):
    register_module(_cls, lambda m: {**layer_kwargs(m), "bits": m.bits})
