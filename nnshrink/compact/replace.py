"""Replace the standard convolutions of a model with compact blocks, keeping every shape.

``nnshrink.compress_(model, CompactReplace(block="dwsep"), example_inputs=x)`` swaps each selected
``nn.Conv2d`` for a block built from that conv's geometry, checks the block produces the conv's
output shape, and reports per layer the parameter and MAC change (or why the layer was skipped).

Blocks: the structural ones of :mod:`nnshrink.compact.blocks` (``dwsep``, ``fire``, ``shuffle``,
``factorized``), which start from random weights, and the transferred ones of
:mod:`nnshrink.compact.transferred`: ``crelu`` (half the filters, the other half their negations,
for a conv a ReLU follows, directly or through a BatchNorm) and ``rotation`` (a quarter of the
filters, each used at 4 rotations). Transferred blocks start from a fit to the original filters
(``init="original"``, see :mod:`nnshrink.compact.fit`) with the channel and BatchNorm bookkeeping
of :mod:`nnshrink.compact.transfer`. Either way, train the result: fine-tune it, or distill it
from a copy of the original (:mod:`nnshrink.distill`; ``nnshrink compact --distill``).

Which convs: every ``nn.Conv2d`` the model runs on ``example_inputs``, narrowed by ``include`` /
``exclude`` / ``per_layer`` (:class:`~nnshrink.core.LayerSelection`; ``@first`` / ``@last`` are the
first / last conv the model runs) and ``filter_fn``. ``exclude`` holds ``"@first"`` by default:
the stem sees raw pixels with few channels, where a block saves little and hurts most. Skipped
too, with the reason reported: 1x1 convs (already pointwise), depthwise and grouped convs
(already compact), and any layer where the block would not have fewer parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import (
    Config,
    ConfigError,
    LayerSelection,
    as_input_tuple,
    forward_with_hooks,
    register_handler,
    set_submodule,
)
from ..metrics import count_macs, count_params
from .blocks import BLOCKS, DepthwiseSeparableConv, FactorizedConv, FireConv, ShuffleConv
from .graph import ConvUse, conv_uses
from .selection import (
    overrides_for,
    position_of,
    selection_reason,
    technical_reason,
    whole_name_patterns,
)
from .transfer import TransferPlan, plan_transfer
from .transferred import TRANSFERRED_BLOCKS

BlockName = Literal["dwsep", "fire", "shuffle", "factorized", "crelu", "rotation"]
ALL_BLOCKS: dict[str, type[nn.Module]] = {**BLOCKS, **TRANSFERRED_BLOCKS}
_OVERRIDABLE = ("block", "groups", "squeeze_ratio", "bn_relu", "init")


def _skip_first(value: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """``skip_first=True/False`` → the ``"@first"`` token in ``exclude`` (merged with it)."""
    exclude = list(given.get("exclude", ("@first",)))
    if value and "@first" not in exclude:
        exclude.append("@first")
    if not value:
        exclude = [p for p in exclude if p != "@first"]
    return {"exclude": tuple(exclude)}


@dataclasses.dataclass(frozen=True)
class CompactReplace(Config, LayerSelection):
    """Swap standard convolutions for compact blocks (same in/out channels, stride, output shape).

    Args:
        block: ``"dwsep"`` (depthwise-separable), ``"fire"`` (SqueezeNet fire module),
            ``"shuffle"`` (group conv + channel shuffle), ``"factorized"`` (k x 1 then 1 x k),
            ``"crelu"`` (``C_out/2`` filters and their negations; convs followed by a ReLU) or
            ``"rotation"`` (``C_out/4`` filters at 0/90/180/270°; square kernels).
        include: conv names, whole-name regexes or tokens to consider (empty: every conv).
        exclude: the same, to leave alone; ``("@first",)`` by default (the stem).
        per_layer: ``{pattern: {field: value} | None}``: per-conv ``block``, ``groups``,
            ``squeeze_ratio``, ``bn_relu`` or ``init``; ``None`` leaves the conv alone.
        groups: groups for ``"shuffle"``.
        squeeze_ratio: squeeze channels / output channels for ``"fire"``.
        bn_relu: BatchNorm + ReLU between the two convs of ``"dwsep"`` and ``"factorized"``.
        init: ``"original"``: ``crelu`` / ``rotation`` start from a fit to the conv's trained
            filters (pairs / rotation groups); ``"random"``: fresh weights. The structural
            blocks always start random.

    ``skip_first`` (deprecated, removal in 0.6) maps to the ``"@first"`` token in ``exclude``.
    Patterns match whole names; an old-style pattern that only matches inside names (searched,
    as before 0.5) still works, with a ``DeprecationWarning``.

    Example:
        >>> cfg = CompactReplace(block="crelu", per_layer={"layer3.*": {"block": "rotation"}})
        >>> Config.from_dict(cfg.to_dict()) == cfg, cfg.exclude
        (True, ('@first',))
    """

    kind: ClassVar[str] = "compact"
    renamed: ClassVar[dict[str, Any]] = {"skip_first": _skip_first}

    block: BlockName = "dwsep"
    exclude: tuple[str, ...] = dataclasses.field(default=("@first",), kw_only=True)
    groups: int = 4
    squeeze_ratio: float = 0.25
    bn_relu: bool = True
    init: Literal["original", "random"] = "original"

    def validate(self) -> None:
        if self.block not in ALL_BLOCKS:
            raise ConfigError(f"compact.block: {self.block!r} is not one of {sorted(ALL_BLOCKS)}")
        if self.init not in ("original", "random"):
            raise ConfigError(f"compact.init: {self.init!r} is not one of ['original', 'random']")
        if self.groups < 1:
            raise ConfigError(f"compact.groups must be >= 1, got {self.groups}")
        if not 0 < self.squeeze_ratio <= 1:
            raise ConfigError(f"compact.squeeze_ratio must be in (0, 1], got {self.squeeze_ratio}")
        for pattern, value in self.per_layer.items():
            if value is not None and not isinstance(value, Mapping):
                raise ConfigError(
                    f"compact.per_layer[{pattern!r}]: compact has no amount; give a mapping "
                    f"such as {{'block': 'crelu'}} or null (leave the conv alone), got {value!r}"
                )
            if value:
                fields = {k: v for k, v in value.items() if k != "skip"}
                unknown = sorted(set(fields) - set(_OVERRIDABLE))
                if unknown:
                    raise ConfigError(
                        f"compact.per_layer[{pattern!r}]: {unknown} cannot be set per layer; "
                        f"allowed: {list(_OVERRIDABLE)}"
                    )
                try:
                    self.for_layer(fields)
                except ConfigError as exc:
                    raise ConfigError(f"compact.per_layer[{pattern!r}]: {exc}") from None

    def for_layer(self, overrides: Mapping[str, Any]) -> CompactReplace:
        """This config with one layer's ``per_layer`` overrides applied."""
        if not overrides:
            return self
        return dataclasses.replace(self, per_layer={}, **dict(overrides))


@dataclasses.dataclass
class LayerChange:
    """One conv of the model: replaced (with its cost before/after) or skipped (with why).

    ``block`` is the block used (or asked for); ``fit_cosine`` the mean cosine between the
    original filters and those a transferred block applies in their place (``None`` for a random
    start); ``notes`` says what was done with channel orders and BatchNorms.
    """

    name: str
    replaced: bool
    reason: str
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    output_shape: tuple[int, ...]
    block: str = ""
    fit_cosine: float | None = None
    notes: str = ""


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
            action = f"→ {r.block or self.block}" if r.replaced else f"skip: {r.reason}"
            if r.replaced and r.fit_cosine is not None:
                action += f" (fit cos {r.fit_cosine:.2f})"
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
    """The block ``config`` asks for, built (with fresh weights) to stand in for ``conv``.

    ``crelu`` / ``rotation`` fitted to the conv's filters need the model around the conv (what
    reads it): :class:`CompactReplace` builds those through :mod:`nnshrink.compact.transfer`.

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
    if config.block in TRANSFERRED_BLOCKS:
        return TRANSFERRED_BLOCKS[config.block].from_conv(conv)
    return FactorizedConv.from_conv(conv, bn_relu=config.bn_relu)


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
    config = whole_name_patterns(config, order)
    params_before, macs_before = count_params(model), count_macs(model, inputs)
    modules = dict(model.named_modules())
    positions = {name: position_of(i, len(order)) for i, name in enumerate(order)}
    layer_configs = {
        name: config.for_layer(overrides_for(config, name, modules[name], positions[name]))
        for name in order
    }
    uses = {}
    if any(c.block in TRANSFERRED_BLOCKS for c in layer_configs.values()):
        uses = conv_uses(model, inputs)

    # plan and build everything first, so a failure leaves the model untouched
    rows: list[LayerChange] = []
    planned: list[tuple[str, nn.Module]] = []
    bn_edits: dict[str, dict[str, torch.Tensor]] = {}
    reader_order: dict[str, tuple[str, torch.Tensor]] = {}  # reader conv -> (producer, index)
    block_types = tuple(ALL_BLOCKS.values())
    inside_blocks = tuple(f"{n}." for n, m in modules.items() if n and isinstance(m, block_types))
    for name in order:
        conv, layer_config = modules[name], layer_configs[name]
        in_shape, out_shape = traced[name]
        conv_params = count_params(conv)
        probe = torch.zeros(in_shape, device=conv.weight.device, dtype=conv.weight.dtype)
        conv_macs = count_macs(conv, probe)
        if name.startswith(inside_blocks):
            reason = "part of a compact block already"
        else:
            reason = selection_reason(layer_config, name, conv, positions[name])
            if reason is None and filter_fn is not None and not filter_fn(conv, name):
                reason = "rejected by filter_fn"
            reason = reason or technical_reason(conv, layer_config, uses.get(name))
        block, plan = None, None
        if reason is None:
            block, plan = _build(name, conv, layer_config, uses, modules, reader_order)
            block_macs = count_macs(block, probe)
            with torch.no_grad():
                got = tuple(block.eval()(probe).shape)
            block.train(conv.training)
            if got != out_shape:  # a bug in a block, not a user error: fail loudly
                raise RuntimeError(
                    f"{layer_config.block} block for {name} gives shape {got}, conv gives "
                    f"{out_shape}"
                )
            if count_params(block) >= conv_params:
                reason = "block would not have fewer parameters"
        if reason is None:
            planned.append((name, block))
            if plan is not None:
                if plan.batchnorm is not None and plan.bn_state:
                    bn_edits[plan.batchnorm] = plan.bn_state
                for reader, index in plan.reader_order.items():
                    reader_order[reader] = (name, index)
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
                layer_config.block,
                plan.fit_cosine if plan is not None and reason is None else None,
                plan.notes if plan is not None and reason is None else "",
            )  # fmt: skip
        )
    for name, module in modules.items():
        if isinstance(module, nn.Conv2d) and name not in traced:
            n = count_params(module)
            rows.append(LayerChange(name, False, "not called on example_inputs", n, n, 0, 0, ()))

    replaced = {name for name, _ in planned}
    with torch.no_grad():
        for reader, (producer, index) in reader_order.items():
            if reader not in replaced:  # a replaced reader was fitted to the permuted weight
                weight = modules[reader].weight
                weight.copy_(weight.index_select(1, index))
            row = next(r for r in rows if r.name == reader)
            row.notes = (row.notes + "; " if row.notes else "") + (
                f"input channels reordered to follow {producer}"
            )
        for bn_name, state in bn_edits.items():
            bn = modules[bn_name]
            for key, value in state.items():
                getattr(bn, key).copy_(value)
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


def _build(
    name: str,
    conv: nn.Conv2d,
    config: CompactReplace,
    uses: dict[str, ConvUse],
    modules: dict[str, nn.Module],
    reader_order: dict[str, tuple[str, torch.Tensor]],
) -> tuple[nn.Module, TransferPlan | None]:
    """The block for one conv, and for transferred blocks the plan with its bookkeeping."""
    if config.block not in TRANSFERRED_BLOCKS:
        return build_block(conv, config).to(conv.weight.device, conv.weight.dtype), None
    use = uses.get(name)
    weight = conv.weight
    if name in reader_order:  # an earlier CReLU moved its channel order into this conv
        weight = weight.detach().index_select(1, reader_order[name][1])
    bn = modules[use.batchnorm] if use is not None and use.batchnorm else None
    plan = plan_transfer(config.block, conv, use, bn, init=config.init, weight=weight)
    return plan.block, plan
