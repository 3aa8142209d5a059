"""Replace the standard convolutions of a model with compact blocks, keeping every shape.

``nnshrink.compress_(model, CompactReplace(block="dwsep"), example_inputs=x)`` swaps each selected
``nn.Conv2d`` for a block from :mod:`nnshrink.compact.blocks` built from that conv's geometry,
checks the block produces the conv's output shape, and reports per layer the parameter and MAC
change (or why the layer was skipped). The new model starts from random block weights: fine-tune
it, or distill it from a copy of the original (:mod:`nnshrink.distill`; ``nnshrink compact
--distill`` does this).

Skipped by default, with the reason reported: the first conv executed (the stem sees raw pixels
with few channels, where a factorization saves little and hurts most), 1x1 convs (already
pointwise: no block is cheaper), depthwise and grouped convs (already compact), and any layer
where the block would not have fewer parameters than the conv.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import (
    Config,
    ConfigError,
    as_input_tuple,
    check_regexes,
    forward_with_hooks,
    register_handler,
    set_submodule,
)
from ..metrics import count_macs, count_params
from .blocks import BLOCKS, DepthwiseSeparableConv, FactorizedConv, FireConv, ShuffleConv

BlockName = Literal["dwsep", "fire", "shuffle", "factorized"]


@dataclasses.dataclass(frozen=True)
class CompactReplace(Config):
    """Swap standard convolutions for compact blocks (same in/out channels, stride, output shape).

    Args:
        block: ``"dwsep"`` (depthwise-separable), ``"fire"`` (SqueezeNet fire module),
            ``"shuffle"`` (group conv + channel shuffle) or ``"factorized"`` (k x 1 then 1 x k).
        include: regexes; when given, only convs whose qualified name matches one
            (``re.search``) are replaced.
        exclude: regexes of conv names never replaced.
        groups: groups for ``"shuffle"``.
        squeeze_ratio: squeeze channels / output channels for ``"fire"``.
        bn_relu: BatchNorm + ReLU between the two convs of ``"dwsep"`` and ``"factorized"``.
        skip_first: leave the first conv executed (the stem) alone.

    Example:
        >>> cfg = CompactReplace(block="dwsep", exclude=(r"^layer3",))
        >>> Config.from_dict(cfg.to_dict()) == cfg
        True
    """

    kind: ClassVar[str] = "compact"

    block: BlockName = "dwsep"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    groups: int = 4
    squeeze_ratio: float = 0.25
    bn_relu: bool = True
    skip_first: bool = True

    def validate(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError(f"compact.block: {self.block!r} is not one of {sorted(BLOCKS)}")
        if self.groups < 1:
            raise ConfigError(f"compact.groups must be >= 1, got {self.groups}")
        if not 0 < self.squeeze_ratio <= 1:
            raise ConfigError(f"compact.squeeze_ratio must be in (0, 1], got {self.squeeze_ratio}")
        check_regexes(self.kind, (*self.include, *self.exclude))


@dataclasses.dataclass
class LayerChange:
    """One conv of the model: replaced (with its cost before/after) or skipped (with why)."""

    name: str
    replaced: bool
    reason: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    output_shape: tuple[int, ...]


@dataclasses.dataclass
class CompactResult:
    """What :class:`CompactReplace` did: per-layer rows and whole-model totals."""

    block: str
    layers: list[LayerChange]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def replaced(self) -> list[str]:
        """Names of the convs that were replaced."""
        return [row.name for row in self.layers if row.replaced]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-able)."""
        return dataclasses.asdict(self)

    def to_markdown(self) -> str:
        """A per-layer table followed by the totals."""
        lines = [
            "| layer | action | params before → after | MACs before → after |",
            "|---|---|---|---|",
        ]
        for r in self.layers:
            action = f"→ {self.block}" if r.replaced else f"skip: {r.reason}"
            lines.append(
                f"| {r.name} | {action} | {r.params_before:,} → {r.params_after:,} "
                f"| {r.macs_before:,} → {r.macs_after:,} |"
            )
        lines.append(
            f"| **total** | {len(self.replaced)} replaced | {self.params_before:,} → "
            f"{self.params_after:,} | {self.macs_before:,} → {self.macs_after:,} |"
        )
        return "\n".join(lines)


def build_block(conv: nn.Conv2d, config: CompactReplace) -> nn.Module:
    """The block ``config`` asks for, built to stand in for ``conv``.

    Example:
        >>> build_block(nn.Conv2d(8, 16, 3, padding=1), CompactReplace(block="shuffle")).conv.groups
        4
    """
    if config.block == "dwsep":
        return DepthwiseSeparableConv.from_conv(conv, bn_relu=config.bn_relu)
    if config.block == "fire":
        return FireConv.from_conv(conv, squeeze_ratio=config.squeeze_ratio)
    if config.block == "shuffle":
        return ShuffleConv.from_conv(conv, groups=config.groups)
    return FactorizedConv.from_conv(conv, bn_relu=config.bn_relu)


def skip_reason(
    name: str,
    conv: nn.Conv2d,
    config: CompactReplace,
    *,
    is_first: bool,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> str | None:
    """Why ``conv`` is left alone under ``config`` (``None`` when it is to be replaced)."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not a plain nn.Conv2d"
    if config.include and not any(re.search(p, name) for p in config.include):
        return "not matched by include"
    if any(re.search(p, name) for p in config.exclude):
        return "matched by exclude"
    if filter_fn is not None and not filter_fn(conv, name):
        return "rejected by filter_fn"
    if config.skip_first and is_first:
        return "first conv (stem: raw pixels, few channels; skip_first=False to include)"
    if conv.groups == conv.in_channels and conv.groups > 1:
        return "depthwise conv (already compact)"
    if conv.groups > 1:
        return f"grouped conv (groups={conv.groups}; already compact)"
    kernel = tuple(conv.kernel_size)
    if math.prod(kernel) == 1:
        return "1x1 pointwise conv (no block is cheaper)"
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return "string padding or non-zero padding_mode (unsupported by the blocks)"
    if config.block == "fire" and any(k % 2 == 0 for k in kernel):
        return f"even kernel {kernel} (fire needs an odd kernel)"
    if config.block == "factorized" and 1 in kernel:
        return f"kernel {kernel} is already one-dimensional"
    if config.block == "fire" and conv.out_channels < 2:
        return "fewer than 2 output channels (fire needs two expand branches)"
    if config.block == "shuffle" and (
        conv.in_channels % config.groups or conv.out_channels % config.groups
    ):
        return (
            f"channels {conv.in_channels}->{conv.out_channels} not divisible by "
            f"groups={config.groups}"
        )
    return None


def _trace_convs(model: nn.Module, inputs: tuple) -> dict[str, tuple[tuple, tuple]]:
    """Run the model once; return ``{conv name: (input shape, output shape)}`` in call order."""
    shapes: dict[str, tuple[tuple, tuple]] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):

            def hook(mod, args, out, name=name):
                shapes.setdefault(name, (tuple(args[0].shape), tuple(out.shape)))

            handles.append(module.register_forward_hook(hook))
    forward_with_hooks(model, inputs, handles)
    return shapes


@register_handler(CompactReplace)
def _apply(
    model: nn.Module,
    config: CompactReplace,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> CompactResult:
    """Replace the selected convs of ``model`` in place and report the change per layer."""
    if example_inputs is None:
        raise ValueError(
            "CompactReplace needs example_inputs (e.g. torch.randn(1, 1, 28, 28)) to check shapes "
            "and count MACs"
        )
    inputs = as_input_tuple(example_inputs)
    traced = _trace_convs(model, inputs)
    order = list(traced)
    first = order[0] if order else None
    params_before, macs_before = count_params(model), count_macs(model, inputs)

    # decide and build everything first, so a failure leaves the model untouched
    rows: list[LayerChange] = []
    planned: list[tuple[str, nn.Module]] = []
    convs = dict(model.named_modules())
    block_types = tuple(BLOCKS.values())
    inside_blocks = tuple(f"{n}." for n, m in convs.items() if n and isinstance(m, block_types))
    for name in order:
        conv = convs[name]
        in_shape, out_shape = traced[name]
        conv_params = count_params(conv)
        conv_macs = count_macs(conv, torch.zeros(in_shape, device=conv.weight.device))
        if name.startswith(inside_blocks):
            reason = "part of a compact block already"
        else:
            reason = skip_reason(name, conv, config, is_first=name == first, filter_fn=filter_fn)
        block = None
        if reason is None:
            block = build_block(conv, config).to(conv.weight.device, conv.weight.dtype)
            probe = torch.zeros(in_shape, device=conv.weight.device, dtype=conv.weight.dtype)
            block_macs = count_macs(block, probe)
            with torch.no_grad():
                got = tuple(block.eval()(probe).shape)
            block.train(conv.training)
            if got != out_shape:  # a bug in a block, not a user error: fail loudly
                raise RuntimeError(
                    f"{config.block} block for {name} gives shape {got}, conv gives {out_shape}"
                )
            if count_params(block) >= conv_params:
                reason = "block would not have fewer parameters"
        if reason is None:
            planned.append((name, block))
            after_params, after_macs = count_params(block), block_macs
        else:
            after_params, after_macs = conv_params, conv_macs
        rows.append(
            LayerChange(
                name,
                reason is None,
                reason or "",
                conv_params,
                after_params,
                conv_macs,
                after_macs,
                out_shape,
            )  # fmt: skip
        )
    for name, module in convs.items():
        if isinstance(module, nn.Conv2d) and name not in traced:
            n = count_params(module)
            rows.append(LayerChange(name, False, "not called on example_inputs", n, n, 0, 0, ()))
    for name, block in planned:
        set_submodule(model, name, block)
    return CompactResult(
        block=config.block,
        layers=rows,
        params_before=params_before,
        params_after=count_params(model),
        macs_before=macs_before,
        macs_after=count_macs(model, inputs),
    )
