"""Configs and handlers of binary and ternary weights: ``BinaryWeights`` and ``Ternary``.

``compress_(model, BinaryWeights(...))`` / ``compress_(model, Ternary(...))`` swap eligible
Linear/Conv2d layers for the STE layers of :mod:`nnshrink.binary.layers`, in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from ..core import Config, ConfigError, named_layers, register_handler, set_submodule
from .layers import (
    BinaryConv2d,
    BinaryLinear,
    BinaryMode,
    TernaryConv2d,
    TernaryLinear,
    TernaryMode,
    _convert,
    clip_latent_,
    pack_low_bit,
)

__all__ = ["BinaryWeights", "LowBitRow", "Ternary"]


# --------------------------------------------------------------------------------------------
# Configs and handlers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BinaryWeights(Config):
    """Binary weights: BinaryConnect (deterministic/stochastic) or XNOR-style scaled signs.

    Args:
        mode: ``"deterministic"``, ``"stochastic"`` or ``"xnor"``.
        keep_first: leave the first eligible layer in full precision (common practice; the
            BinaryConnect paper binarised every layer).
        keep_last: leave the last eligible layer in full precision.

    Example:
        >>> BinaryWeights(mode="xnor").to_dict()
        {'type': 'binary', 'mode': 'xnor', 'keep_first': True, 'keep_last': True}
    """

    kind: ClassVar[str] = "binary"
    mode: BinaryMode = "deterministic"
    keep_first: bool = True
    keep_last: bool = True

    def validate(self) -> None:
        if self.mode not in ("deterministic", "stochastic", "xnor"):
            raise ConfigError(f"binary.mode: {self.mode!r} is not deterministic/stochastic/xnor")


@dataclasses.dataclass(frozen=True)
class Ternary(Config):
    """Ternary weights: TWN (fixed threshold and scale) or TTQ (learned scales).

    Args:
        mode: ``"twn"`` or ``"ttq"``.
        twn_factor: TWN threshold ``delta = twn_factor * mean|W|`` (paper: 0.7).
        ttq_threshold: TTQ threshold ``delta = ttq_threshold * max|W|`` (paper: 0.05).
        keep_first, keep_last: leave the first/last eligible layer in full precision.

    Example:
        >>> Ternary(mode="ttq").mode
        'ttq'
    """

    kind: ClassVar[str] = "ternary"
    mode: TernaryMode = "twn"
    twn_factor: float = 0.7
    ttq_threshold: float = 0.05
    keep_first: bool = True
    keep_last: bool = True

    def validate(self) -> None:
        if self.mode not in ("twn", "ttq"):
            raise ConfigError(f"ternary.mode: {self.mode!r} is not 'twn' or 'ttq'")
        if not 0 < self.twn_factor < 10:
            raise ConfigError(f"ternary.twn_factor must be in (0, 10), got {self.twn_factor}")
        if not 0 < self.ttq_threshold < 1:
            raise ConfigError(f"ternary.ttq_threshold must be in (0, 1), got {self.ttq_threshold}")


@dataclasses.dataclass
class LowBitRow:
    """Per-layer result of :class:`BinaryWeights` / :class:`Ternary`."""

    name: str
    type: str
    replaced_by: str
    weights: int
    float_bytes: int
    packed_bytes: int


def _targets(model: nn.Module, config: Any, filter_fn: Any) -> list[tuple[str, nn.Module]]:
    layers = [
        (n, m)
        for n, m in named_layers(model, (nn.Linear, nn.Conv2d), filter_fn)
        if type(m) in (nn.Linear, nn.Conv2d)
    ]
    if not layers:
        raise ValueError(
            f"{config.kind}: no nn.Linear/nn.Conv2d layer to convert (check filter_fn)"
        )
    if any(n == "" for n, _ in layers):
        raise ValueError(f"{config.kind}: pass a container model, not a bare layer")
    first, last = layers[0][0], layers[-1][0]
    return [
        (n, m)
        for n, m in layers
        if not ((config.keep_first and n == first) or (config.keep_last and n == last))
    ]


def _replace_all(
    model: nn.Module, pairs: list[tuple[str, nn.Module, nn.Module]]
) -> list[LowBitRow]:
    packed = {}
    for name, _, new in pairs:
        packed[name] = pack_low_bit(nn.Sequential(new))["0"]
    rows = [
        LowBitRow(
            name,
            type(old).__name__,
            type(new).__name__,
            old.weight.numel(),
            old.weight.numel() * old.weight.element_size(),
            packed[name].nbytes,
        )
        for name, old, new in pairs
    ]
    for name, _, new in pairs:
        set_submodule(model, name, new)
    return rows


@register_handler(BinaryWeights)
def _apply_binary(
    model: nn.Module,
    config: BinaryWeights,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[LowBitRow]:
    pairs = []
    for name, m in _targets(model, config, filter_fn):
        cls = BinaryLinear if isinstance(m, nn.Linear) else BinaryConv2d
        pairs.append((name, m, _convert(m, cls, mode=config.mode)))
    if config.mode != "xnor":
        clip_latent_(nn.ModuleList([new for _, _, new in pairs]))
    return _replace_all(model, pairs)


@register_handler(Ternary)
def _apply_ternary(
    model: nn.Module,
    config: Ternary,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[LowBitRow]:
    threshold = config.twn_factor if config.mode == "twn" else config.ttq_threshold
    pairs = []
    for name, m in _targets(model, config, filter_fn):
        cls = TernaryLinear if isinstance(m, nn.Linear) else TernaryConv2d
        pairs.append((name, m, _convert(m, cls, mode=config.mode, threshold=threshold)))
    return _replace_all(model, pairs)
