"""Configs and handlers of binary and ternary weights: ``BinaryWeights`` and ``Ternary``.

``compress_(model, BinaryWeights(...))`` / ``compress_(model, Ternary(...))`` swap eligible
Linear/Conv2d layers for the STE layers of :mod:`nnshrink.binary.layers` (or, with
``BinaryWeights(mode="xnor", activations=True)``, the XNOR-Net layers of
:mod:`nnshrink.binary.xnor_layers`), in place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from ..core import (
    Config,
    ConfigError,
    LayerSelection,
    named_layers,
    register_handler,
    set_submodule,
)
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
from .xnor_layers import XNORConv2d, XNORLinear

__all__ = ["BinaryWeights", "LowBitRow", "Ternary"]


# --------------------------------------------------------------------------------------------
# Configs and handlers
# --------------------------------------------------------------------------------------------


def _keep(token: str) -> Callable[[bool], dict[str, Any]]:
    """Map the deprecated ``keep_first`` / ``keep_last`` flags onto ``exclude`` tokens."""

    def rename(keep: Any) -> dict[str, Any]:
        def edit(current: tuple[str, ...] | None) -> tuple[str, ...]:
            base = DEFAULT_EXCLUDE if current is None else tuple(current)
            if not keep:
                return tuple(t for t in base if t != token)
            return tuple(t for t in DEFAULT_EXCLUDE if t in base or t == token)

        return {"exclude": edit}

    return rename


DEFAULT_EXCLUDE = ("@first", "@last")
_KEEP_RENAMES: dict[str, Any] = {"keep_first": _keep("@first"), "keep_last": _keep("@last")}


@dataclasses.dataclass(frozen=True)
class BinaryWeights(Config, LayerSelection):
    """Binary weights (BinaryConnect, XNOR-style scaled signs), optionally binary activations.

    Args:
        mode: ``"deterministic"``, ``"stochastic"`` or ``"xnor"``.
        activations: with ``mode="xnor"``, binarize the layers' inputs too (XNOR-Net): the layers
            become :class:`~nnshrink.binary.xnor_layers.XNORConv2d` / ``XNORLinear``, which run
            the bit-packed XNOR + popcount kernel in eval mode.
        scale_activations: XNOR-Net's activation scale ``K`` (with ``activations``).
        include, exclude, per_layer: which layers (:class:`~nnshrink.core.LayerSelection`);
            by default the first and last eligible layers stay in full precision, as in the
            XNOR-Net paper (the BinaryConnect paper binarised every layer: ``exclude=()``).
            ``per_layer`` mappings may set ``mode``, ``activations``, ``scale_activations``.

    Deprecated: ``keep_first`` / ``keep_last`` (use ``exclude``; removal in 0.6).

    Example:
        >>> BinaryWeights(mode="xnor", activations=True).exclude
        ('@first', '@last')
    """

    kind: ClassVar[str] = "binary"
    renamed: ClassVar[dict[str, Any]] = _KEEP_RENAMES
    mode: BinaryMode = "deterministic"
    activations: bool = False
    scale_activations: bool = True
    exclude: tuple[str, ...] = dataclasses.field(default=DEFAULT_EXCLUDE, kw_only=True)

    def validate(self) -> None:
        if self.mode not in ("deterministic", "stochastic", "xnor"):
            raise ConfigError(f"binary.mode: {self.mode!r} is not deterministic/stochastic/xnor")
        if self.activations and self.mode != "xnor":
            raise ConfigError(
                f"binary.activations=True binarizes inputs XNOR-Net style and needs "
                f"mode='xnor', got mode={self.mode!r}"
            )


@dataclasses.dataclass(frozen=True)
class Ternary(Config, LayerSelection):
    """Ternary weights: TWN (fixed threshold and scale) or TTQ (learned scales).

    Args:
        mode: ``"twn"`` or ``"ttq"``.
        twn_factor: TWN threshold ``delta = twn_factor * mean|W|`` (paper: 0.7).
        ttq_threshold: TTQ threshold ``delta = ttq_threshold * max|W|`` (paper: 0.05).
        include, exclude, per_layer: which layers; by default the first and last eligible
            layers stay in full precision. ``per_layer`` mappings may set any field above.

    Deprecated: ``keep_first`` / ``keep_last`` (use ``exclude``; removal in 0.6).

    Example:
        >>> Ternary(mode="ttq").mode
        'ttq'
    """

    kind: ClassVar[str] = "ternary"
    renamed: ClassVar[dict[str, Any]] = _KEEP_RENAMES
    mode: TernaryMode = "twn"
    twn_factor: float = 0.7
    ttq_threshold: float = 0.05
    exclude: tuple[str, ...] = dataclasses.field(default=DEFAULT_EXCLUDE, kw_only=True)

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


def _targets(model: nn.Module, config: Any, filter_fn: Any) -> list[tuple[str, nn.Module, Any]]:
    """``(name, layer, its config with per_layer overrides applied)`` for every selected layer."""
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
    out = []
    for layer in config.select(layers):
        cfg = config
        if layer.overrides:
            cfg = dataclasses.replace(config, per_layer={}, **layer.overrides)
        out.append((layer.name, layer.module, cfg))
    return out


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
    for name, m, cfg in _targets(model, config, filter_fn):
        if cfg.activations:
            _check_xnor(name, m)
            cls = XNORLinear if isinstance(m, nn.Linear) else XNORConv2d
            new = _convert(m, cls, scale_activations=cfg.scale_activations)
        else:
            cls = BinaryLinear if isinstance(m, nn.Linear) else BinaryConv2d
            new = _convert(m, cls, mode=cfg.mode)
        pairs.append((name, m, new))
    clip_latent_(nn.ModuleList([new for _, _, new in pairs]))  # BinaryConnect layers only
    return _replace_all(model, pairs)


def _check_xnor(name: str, m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d) and (
        m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str)
    ):
        from ..pruning.structured.graph import UnsupportedModelError

        raise UnsupportedModelError(
            f"binary: layer {name!r} (groups={m.groups}, padding_mode={m.padding_mode!r}, "
            f"padding={m.padding!r}) cannot run the XNOR kernel, which needs groups=1 and numeric "
            f"zero padding; leave it in float with exclude=[..., {name!r}] or "
            f"per_layer={{{name!r}: {{'activations': False}}}}"
        )


@register_handler(Ternary)
def _apply_ternary(
    model: nn.Module,
    config: Ternary,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[LowBitRow]:
    pairs = []
    for name, m, cfg in _targets(model, config, filter_fn):
        threshold = cfg.twn_factor if cfg.mode == "twn" else cfg.ttq_threshold
        cls = TernaryLinear if isinstance(m, nn.Linear) else TernaryConv2d
        pairs.append((name, m, _convert(m, cls, mode=cfg.mode, threshold=threshold)))
    return _replace_all(model, pairs)
