"""HashedNets (Chen et al. 2015): a linear layer whose weights come from a small shared vector.

The ``out x in`` *virtual* weight matrix is ``V[i, j] = xi(i, j) * w[h(i, j)]``: ``w`` is a
trainable vector of ``buckets`` values, ``h`` hashes each position to a bucket and ``xi`` is a
sign hash in ``{-1, +1}`` (which makes the inner products of hashed features unbiased). Only ``w``
(and the bias) is stored and trained, so the compression ratio is ``buckets / (out * in)``.

The hash is murmur3's 32-bit finaliser applied to ``(i * in + j) xor seed``, computed in int64
torch arithmetic split so that no product overflows: deterministic across runs, platforms and
thread counts. The bucket and sign index buffers are recomputed from ``seed`` at construction and
are not saved (``persistent=False``), so a checkpoint holds only ``w`` and the bias.

Example:
    >>> layer = HashedLinear(784, 300, buckets=784 * 300 // 8)
    >>> layer(torch.zeros(2, 784)).shape, layer.compression
    (torch.Size([2, 300]), 0.125)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Config, ConfigError, LayerSelection, register_handler, set_submodule
from ..io import register_module

__all__ = ["HashedLinear", "HashedRow", "Hashing", "hash_positions", "mix32"]

_MASK32 = 0xFFFFFFFF


def _mul32(h: torch.Tensor, c: int) -> torch.Tensor:
    """``(h * c) mod 2**32`` for int64 ``h < 2**32`` without int64 overflow."""
    lo = h * (c & 0xFFFF)
    hi = ((h * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def mix32(h: torch.Tensor) -> torch.Tensor:
    """murmur3 ``fmix32`` on int64 tensors holding 32-bit values (a bijection on ``[0, 2**32)``).

    Example:
        >>> mix32(torch.tensor([0, 1])).tolist()
        [0, 1364076727]
    """
    h = h & _MASK32
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def hash_positions(
    rows: int, cols: int, buckets: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bucket index ``h(i, j)`` (int64) and sign ``xi(i, j)`` (+-1.0) for a ``rows x cols`` grid.

    Args:
        rows, cols: virtual matrix shape.
        buckets: number of shared values.
        seed: hash seed; the sign hash uses an independent seed derived from it.

    Example:
        >>> idx, sign = hash_positions(2, 3, buckets=4)
        >>> idx.shape, bool((idx < 4).all()), sorted(sign.unique().tolist())
        (torch.Size([2, 3]), True, [-1.0, 1.0])
    """
    if rows * cols >= 2**32:
        raise ValueError(f"a {rows}x{cols} matrix is too large for the 32-bit position hash")
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    keys = torch.arange(rows * cols, dtype=torch.int64)
    seed_a = int(mix32(torch.tensor(2 * seed + 1)))
    seed_b = int(mix32(torch.tensor(2 * seed + 2)))
    index = mix32(keys ^ seed_a) % buckets
    sign = (mix32(keys ^ seed_b) & 1).to(torch.float32) * 2 - 1
    return index.reshape(rows, cols), sign.reshape(rows, cols)


class HashedLinear(nn.Module):
    """Linear layer with a hashed virtual weight matrix (HashedNets).

    Args:
        in_features, out_features: virtual matrix is ``out_features x in_features``.
        buckets: size of the shared trainable weight vector.
        bias: add a (not hashed) bias.
        seed: hash seed (different layers should use different seeds).

    Example:
        >>> layer = HashedLinear(16, 4, buckets=8)
        >>> sum(p.numel() for p in layer.parameters())
        12
    """

    def __init__(
        self, in_features: int, out_features: int, buckets: int, bias: bool = True, seed: int = 0
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.buckets = buckets
        self.seed = seed
        index, sign = hash_positions(out_features, in_features, buckets, seed)
        self.register_buffer("hash_index", index, persistent=False)
        self.register_buffer("hash_sign", sign, persistent=False)
        bound = 1 / math.sqrt(in_features)
        self.weight_vec = nn.Parameter(torch.empty(buckets).uniform_(-bound, bound))
        self.bias = (
            nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None
        )

    @property
    def sparsity(self) -> float:
        """Fraction of the virtual weights not stored: ``1 - buckets / (out * in)``."""
        return 1.0 - self.compression

    @property
    def compression(self) -> float:
        """Stored weights over virtual weights: ``buckets / (out * in)``."""
        return self.buckets / (self.in_features * self.out_features)

    def virtual_weight(self) -> torch.Tensor:
        """The materialised ``out x in`` weight matrix (differentiable w.r.t. ``weight_vec``)."""
        return self.weight_vec[self.hash_index] * self.hash_sign.to(self.weight_vec.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.virtual_weight(), self.bias)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """The equivalent plain ``nn.Linear`` (``in * out`` weights: larger, but exportable)."""
        out = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        out.to(device=self.weight_vec.device, dtype=self.weight_vec.dtype)
        out.weight.copy_(self.virtual_weight())
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, buckets: int, seed: int = 0) -> HashedLinear:
        """Hash a trained ``nn.Linear``: each bucket starts at the least-squares fit
        ``mean(xi * W)`` over its positions (empty buckets start at 0)."""
        new = cls(linear.in_features, linear.out_features, buckets, linear.bias is not None, seed)
        new.to(device=linear.weight.device, dtype=linear.weight.dtype)
        w = linear.weight.detach()
        flat_idx = new.hash_index.reshape(-1)
        sums = torch.zeros(buckets, dtype=torch.float64, device=w.device)
        sums.index_add_(0, flat_idx, (w * new.hash_sign).reshape(-1).double())
        counts = torch.bincount(flat_idx, minlength=buckets).clamp(min=1)
        new.weight_vec.copy_(sums / counts)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
        return new

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        # The forward is a dense matmul with the virtual matrix.
        return output.numel() * self.in_features

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"buckets={self.buckets}, seed={self.seed}"
        )


def _compression_to_sparsity(compression: float) -> dict[str, float]:
    return {"sparsity": 1.0 - compression}


def _min_weights_to_exclude(min_weights: int) -> dict[str, tuple[str, ...]]:
    return {"exclude": (f"@below:{int(min_weights)}",) if min_weights else ()}


@dataclasses.dataclass(frozen=True)
class Hashing(Config, LayerSelection):
    """Replace ``nn.Linear`` layers by :class:`HashedLinear` keeping ``(1 - sparsity) * out * in``
    buckets.

    Args:
        sparsity: fraction of the layer's weights removed, in [0, 1) (HashedNets stored 1/2 ...
            1/64 of the weights: sparsity 0.5 ... 0.984). ``per_layer`` numbers set it per layer.
        seed: base hash seed; layer ``k`` (in module order) uses ``seed + k``.
        include, exclude, per_layer: layer selection (:class:`~nnshrink.core.LayerSelection`);
            ``exclude=("@below:N",)`` leaves layers with fewer than ``N`` weights dense.

    Deprecated: ``compression=c`` (stored / virtual weights) is ``sparsity=1 - c``;
    ``min_weights=N`` is ``exclude=("@below:N",)``.

    Example:
        >>> Hashing(sparsity=0.875, exclude=("@below:1000",)).to_dict()["sparsity"]
        0.875
    """

    kind: ClassVar[str] = "hashing"
    amount_field: ClassVar[str] = "sparsity"
    renamed: ClassVar[dict[str, Any]] = {
        "compression": _compression_to_sparsity,
        "min_weights": _min_weights_to_exclude,
    }
    sparsity: float = 0.875
    seed: int = 0

    def validate(self) -> None:
        amounts = [("sparsity", self.sparsity)]
        for pattern, value in self.per_layer.items():
            value = value.get("sparsity") if isinstance(value, dict) else value
            if value is not None:
                amounts.append((f"per_layer[{pattern!r}]", value))
        for name, value in amounts:
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise ConfigError(
                    f"hashing.{name}: sparsity (fraction of weights removed) must be in [0, 1), "
                    f"got {value!r}"
                )


@dataclasses.dataclass
class HashedRow:
    """Per-layer result of :class:`Hashing`."""

    name: str
    virtual_weights: int
    buckets: int
    sparsity: float

    @property
    def compression(self) -> float:
        """Stored / virtual weights (``1 - sparsity``), the old name of the amount."""
        return 1.0 - self.sparsity


@register_handler(Hashing)
def _apply(
    model: nn.Module,
    config: Hashing,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[HashedRow]:
    candidates = ((n, m) for n, m in model.named_modules() if type(m) is nn.Linear)
    layers = config.select(candidates, filter_fn=filter_fn, amount_field="sparsity")
    if not layers:
        raise ValueError(
            "hashing: no nn.Linear layer to hash (check include/exclude/per_layer and filter_fn)"
        )
    if any(layer.name == "" for layer in layers):
        raise ValueError("hashing: pass a container model, or use HashedLinear.from_linear(layer)")
    new_layers = []
    for k, layer in enumerate(layers):
        m = layer.module
        sparsity = layer.get("sparsity", config.sparsity)
        seed = layer.get("seed", config.seed + k)
        buckets = max(1, round((1.0 - sparsity) * m.weight.numel()))
        new_layers.append((layer.name, HashedLinear.from_linear(m, buckets, seed)))
    rows = []
    for name, new in new_layers:
        set_submodule(model, name, new)
        virtual = new.in_features * new.out_features
        rows.append(HashedRow(name, virtual, new.buckets, 1.0 - new.buckets / virtual))
    return rows


register_module(
    HashedLinear,
    lambda m: {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "buckets": m.buckets,
        "bias": m.bias is not None,
        "seed": m.seed,
    },
)
