"""Circulant projections (Cheng et al. 2015): a linear layer with ``O(n)`` weights and an
``O(n log n)`` FFT forward.

With ``n = max(in, out)``, the layer computes ``y = (C D x_pad)[:out] + b`` where ``D`` is a fixed
random sign flip (``diag`` of +-1, from a seeded hash, not trained), ``x_pad`` is ``x`` zero-padded
to length ``n`` and ``C`` is the ``n x n`` circulant matrix of the trainable vector ``r``,
``C[i, j] = r[(i - j) mod n]``. ``C x`` is the circular convolution ``r * x``, computed as
``irfft(rfft(r) * rfft(x))``. Only ``r`` (``n`` values) and the bias are stored, against
``in * out`` for ``nn.Linear``.

Example:
    >>> layer = CirculantLinear(784, 300)
    >>> layer(torch.zeros(2, 784)).shape, layer.r.numel()
    (torch.Size([2, 300]), 784)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import Config, ConfigError, LayerSelection, register_handler, set_submodule
from ..io import register_module
from .hashing import mix32

__all__ = ["Circulant", "CirculantLinear", "CirculantRow", "circulant_matrix", "sign_vector"]


def sign_vector(n: int, seed: int = 0) -> torch.Tensor:
    """Deterministic +-1 vector of length ``n`` (a hash of the position, so it never depends on
    the torch RNG implementation)."""
    key = int(mix32(torch.tensor(2 * seed + 7)))
    bits = mix32(torch.arange(n, dtype=torch.int64) ^ key) & 1
    return bits.to(torch.float32) * 2 - 1


def circulant_matrix(r: torch.Tensor) -> torch.Tensor:
    """The ``n x n`` circulant matrix ``C[i, j] = r[(i - j) mod n]`` (first column ``r``).

    Example:
        >>> circulant_matrix(torch.tensor([1.0, 2.0, 3.0])).tolist()
        [[1.0, 3.0, 2.0], [2.0, 1.0, 3.0], [3.0, 2.0, 1.0]]
    """
    n = r.numel()
    idx = (torch.arange(n)[:, None] - torch.arange(n)[None, :]) % n
    return r[idx.to(r.device)]


class CirculantLinear(nn.Module):
    """Linear layer whose weight is a (truncated) circulant matrix times a random sign flip.

    Args:
        in_features, out_features: as ``nn.Linear`` (they may differ: padding/truncation).
        bias: add a bias.
        seed: seed of the fixed sign flip ``D``.

    Example:
        >>> layer = CirculantLinear(6, 4)
        >>> torch.allclose(layer(torch.ones(1, 6)), torch.ones(1, 6) @ layer.dense_weight().T
        ...                + layer.bias, atol=1e-6)
        True
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, seed: int = 0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.seed = seed
        self.n = max(in_features, out_features)
        bound = 1 / math.sqrt(in_features)
        self.r = nn.Parameter(torch.empty(self.n).uniform_(-bound, bound))
        self.register_buffer("signs", sign_vector(in_features, seed), persistent=False)
        b = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound)) if bias else None
        self.register_parameter("bias", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.signs.to(x.dtype)
        spectrum = torch.fft.rfft(x, n=self.n) * torch.fft.rfft(self.r, n=self.n)
        y = torch.fft.irfft(spectrum, n=self.n)[..., : self.out_features]
        return y + self.bias if self.bias is not None else y

    def dense_weight(self) -> torch.Tensor:
        """The equivalent ``out x in`` dense weight ``C[:out, :in] * D``."""
        c = circulant_matrix(self.r)
        return c[: self.out_features, : self.in_features] * self.signs.to(self.r.dtype)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """The equivalent plain ``nn.Linear`` (``in * out`` weights: larger, but exportable)."""
        out = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        out.to(device=self.r.device, dtype=self.r.dtype)
        out.weight.copy_(self.dense_weight())
        if self.bias is not None:
            out.bias.copy_(self.bias)
        return out

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, seed: int = 0) -> CirculantLinear:
        """Circulant layer nearest to ``linear`` in Frobenius norm: ``r[k]`` is the mean of
        ``W[i, j] * D[j]`` over the positions with ``(i - j) mod n == k``."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, seed)
        new.to(device=linear.weight.device, dtype=linear.weight.dtype)
        n, out, inp = new.n, new.out_features, new.in_features
        idx = ((torch.arange(out)[:, None] - torch.arange(inp)[None, :]) % n).reshape(-1)
        idx = idx.to(linear.weight.device)
        target = (linear.weight.detach() * new.signs).reshape(-1).double()
        sums = torch.zeros(n, dtype=torch.float64, device=idx.device).index_add_(0, idx, target)
        counts = torch.bincount(idx, minlength=n).clamp(min=1)
        new.r.copy_(sums / counts)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
        return new

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        """FFT cost estimate: per input row two real FFTs of length ``n`` (~``n log2 n`` real
        MACs each) and ``n/2 + 1`` complex products (4 MACs each); plus one FFT of ``r``."""
        rows = output.numel() // self.out_features
        log_n = max(1, math.ceil(math.log2(self.n)))
        per_row = 2 * self.n * log_n + 4 * (self.n // 2 + 1)
        return rows * per_row + self.n * log_n

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n={self.n}"


def _min_weights_to_exclude(min_weights: int) -> dict[str, tuple[str, ...]]:
    return {"exclude": (f"@below:{int(min_weights)}",) if min_weights else ()}


@dataclasses.dataclass(frozen=True)
class Circulant(Config, LayerSelection):
    """Replace ``nn.Linear`` layers by :class:`CirculantLinear`.

    Args:
        init: ``"project"`` starts from the nearest circulant matrix to the trained weights;
            ``"random"`` re-initialises (training from scratch, as in the paper).
        seed: base seed of the sign flips; layer ``k`` uses ``seed + k``.
        include, exclude, per_layer: layer selection (:class:`~nnshrink.core.LayerSelection`);
            ``exclude=("@below:N",)`` leaves layers with fewer than ``N`` weights dense, a
            ``per_layer`` mapping may override ``init`` or ``seed``.

    Deprecated: ``min_weights=N`` is ``exclude=("@below:N",)``.

    Example:
        >>> Circulant(init="random", exclude=("@last",)).to_dict()["exclude"]
        ['@last']
    """

    kind: ClassVar[str] = "circulant"
    renamed: ClassVar[dict[str, Any]] = {"min_weights": _min_weights_to_exclude}
    init: Literal["project", "random"] = "project"
    seed: int = 0

    def validate(self) -> None:
        inits = [self.init] + [
            v["init"] for v in self.per_layer.values() if isinstance(v, dict) and "init" in v
        ]
        for init in inits:
            if init not in ("project", "random"):
                raise ConfigError(f"circulant.init: {init!r} is not 'project' or 'random'")


@dataclasses.dataclass
class CirculantRow:
    """Per-layer result of :class:`Circulant`."""

    name: str
    dense_weights: int
    stored_weights: int


@register_handler(Circulant)
def _apply(
    model: nn.Module,
    config: Circulant,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[CirculantRow]:
    candidates = ((n, m) for n, m in model.named_modules() if type(m) is nn.Linear)
    layers = config.select(candidates, filter_fn=filter_fn)
    if not layers:
        raise ValueError(
            "circulant: no nn.Linear layer to replace (check include/exclude/per_layer and "
            "filter_fn)"
        )
    if any(layer.name == "" for layer in layers):
        raise ValueError("circulant: pass a container model, or use CirculantLinear.from_linear")
    new_layers = []
    for k, layer in enumerate(layers):
        m, seed = layer.module, layer.get("seed", config.seed + k)
        if layer.get("init", config.init) == "project":
            new = CirculantLinear.from_linear(m, seed)
        else:
            new = CirculantLinear(m.in_features, m.out_features, m.bias is not None, seed)
            new.to(device=m.weight.device, dtype=m.weight.dtype)
        new_layers.append((layer.name, new))
    rows = []
    for name, new in new_layers:
        set_submodule(model, name, new)
        rows.append(CirculantRow(name, new.in_features * new.out_features, new.n))
    return rows


register_module(
    CirculantLinear,
    lambda m: {
        "in_features": m.in_features,
        "out_features": m.out_features,
        "bias": m.bias is not None,
        "seed": m.seed,
    },
)
