"""k-means weight sharing (Han, Mao, Dally 2016, *Deep Compression*, section 3).

Each layer's weights (only the non-zero ones when the layer is pruned) are clustered into
``2**bits`` shared values. The layer is replaced by a :class:`SharedWeightLinear` or
:class:`SharedWeightConv2d` (:mod:`nnshrink.sharing.layers`) whose weight is
``codebook[indices] * mask``. Training the model fine-tunes the shared values (each centroid's
gradient is the sum of its members' gradients, as in the paper); use
:func:`nnshrink.sharing.finetune_shared` for settings that work (Adam at 1e-4: plain SGD at the
usual learning rates overshoots, since a centroid's gradient sums thousands of member gradients).
:func:`nnshrink.finalize` (or :func:`strip_sharing`) makes the layers plain again.

Example:
    >>> import nnshrink as ns
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    >>> rows = ns.compress_(model, WeightSharing(bits=2))
    >>> type(model[0]).__name__, model[0].weight.unique().numel() <= 4
    ('SharedWeightLinear', True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from ..core import Config, ConfigError, LayerSelection, register_handler, set_submodule
from ..core.finalize import register_finalizer
from .clustering import InitMethod, init_centroids, kmeans_1d, kmeans_objective
from .layers import (
    SharedWeightConv2d,
    SharedWeightLinear,
    codebook_of,
    is_shared,
    share_weights,
    strip_sharing,
)

__all__ = [
    "SharedWeightConv2d",
    "SharedWeightLinear",
    "SharingRow",
    "WeightSharing",
    "codebook_of",
    "init_centroids",
    "kmeans_1d",
    "kmeans_objective",
    "share_weights",
    "strip_sharing",
]


def _bits_for_token(token: str) -> Callable[[int | None], dict[str, dict[str, int]]]:
    """Translate the deprecated ``conv_bits``/``fc_bits`` into a ``per_layer`` entry."""

    def translate(bits: int | None) -> dict[str, dict[str, int]]:
        return {"per_layer": {} if bits is None else {token: bits}}

    return translate


@dataclasses.dataclass(frozen=True)
class WeightSharing(Config, LayerSelection):
    """k-means weight sharing with ``2**bits`` shared values per layer (Deep Compression).

    Args:
        bits: index width of every selected layer (1..8); ``per_layer`` numbers set it per layer,
            e.g. ``per_layer={"@conv": 8, "@linear": 5}`` (the paper's widths).
        init: centroid initialisation, ``"linear"`` (paper's best), ``"density"`` or ``"random"``.
        iterations: maximum Lloyd iterations.
        seed: seed for ``init="random"``.
        include, exclude, per_layer: layer selection (:class:`~nnshrink.core.LayerSelection`);
            the first matching ``per_layer`` pattern wins, a mapping may override any field.

    Deprecated: ``conv_bits=8, fc_bits=5`` is ``per_layer={"@conv": 8, "@linear": 5}`` (appended
    after the ``per_layer`` entries given, which keep precedence as before).

    Example:
        >>> WeightSharing(per_layer={"@conv": 8, "@linear": 5}).to_dict()["per_layer"]
        {'@conv': 8, '@linear': 5}
    """

    kind: ClassVar[str] = "weight-sharing"
    amount_field: ClassVar[str] = "bits"
    renamed: ClassVar[dict[str, Any]] = {
        "conv_bits": _bits_for_token("@conv"),
        "fc_bits": _bits_for_token("@linear"),
    }
    bits: int = 5
    init: InitMethod = "linear"
    iterations: int = 100
    seed: int = 0

    def validate(self) -> None:
        named: dict[str, Any] = {"bits": self.bits}
        for pattern, value in self.per_layer.items():
            if isinstance(value, Mapping):
                value = value.get("bits")
            if value is not None:
                named[f"per_layer[{pattern!r}]"] = value
        for name, value in named.items():
            if not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 8):
                raise ConfigError(f"weight-sharing.{name}: bits must be in 1..8, got {value!r}")
        inits = [self.init] + [
            v["init"] for v in self.per_layer.values() if isinstance(v, Mapping) and "init" in v
        ]
        for init in inits:
            if init not in ("linear", "density", "random"):
                raise ConfigError(f"weight-sharing.init: {init!r} is not linear/density/random")
        if self.iterations < 0:
            raise ConfigError(f"weight-sharing.iterations must be >= 0, got {self.iterations}")

    def bits_for(self, name: str, module: nn.Module) -> int:
        """Index width for the layer called ``name`` (positional tokens are not resolved here)."""
        overrides = self.overrides_for(name, module, amount_field="bits") or {}
        return int(overrides.get("bits", self.bits))


@dataclasses.dataclass
class SharingRow:
    """Per-layer result of :class:`WeightSharing`."""

    name: str
    type: str
    bits: int
    weights: int
    nonzero: int
    clusters_used: int
    mse: float


@register_handler(WeightSharing)
def _apply(
    model: nn.Module,
    config: WeightSharing,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[SharingRow]:
    candidates = ((n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d))
    layers = config.select(candidates, filter_fn=filter_fn, amount_field="bits")
    if not layers:
        raise ValueError(
            "WeightSharing found no nn.Linear/nn.Conv2d layer to share (check include/exclude/"
            "per_layer and filter_fn)"
        )
    for layer in layers:  # check everything before editing anything
        if layer.name == "":
            raise ValueError(
                "WeightSharing needs a container model, not a bare layer; "
                "wrap it in nn.Sequential or use share_weights(layer, bits)"
            )
        m = layer.module
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise ValueError(
                f"{layer.name}: padding_mode={m.padding_mode!r} is not supported "
                f"(only 'zeros'); leave it out with exclude=({layer.name!r},)"
            )
    rows = []
    replacements = []
    for layer in layers:
        m = layer.module
        bits = int(layer.get("bits", config.bits))
        new = share_weights(
            m,
            bits,
            layer.get("init", config.init),
            int(layer.get("iterations", config.iterations)),
            int(layer.get("seed", config.seed)),
        )
        with torch.no_grad():
            w = m.weight.detach()
            nz = w != 0
            mse = float(((new.weight - w)[nz].double() ** 2).mean()) if nz.any() else 0.0
        used = int(new.indices[new.mask].unique().numel())
        rows.append(
            SharingRow(layer.name, type(m).__name__, bits, w.numel(), int(nz.sum()), used, mse)
        )
        replacements.append((layer.name, new))
    for name, new in replacements:
        set_submodule(model, name, new)
    return rows


def _finalize_sharing(model: nn.Module) -> list[str]:
    names = [name for name, m in model.named_modules() if is_shared(m)]
    strip_sharing(model)
    return names


register_finalizer("sharing", _finalize_sharing)
