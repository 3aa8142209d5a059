"""Depth pruning: remove whole residual blocks (the block becomes its identity shortcut).

Channel pruning makes every layer thinner but keeps every layer. On small models at batch 1 the
time goes into per-operator overhead rather than arithmetic (a ResNet-20 with 14x fewer MACs
still runs at half its ONNX Runtime latency, see docs/pruning.md), so the way to a real
latency cut there is fewer operators: drop residual blocks. A residual network behaves like an
ensemble of paths (Veit et al. 2016, "Residual networks behave like ensembles of relatively
shallow networks"), so removing a block whose residual branch barely changes its input costs
little accuracy, and fine-tuning (or distillation) recovers most of the rest.

``nnshrink.compress_(model, BlockPruning(remove=3), example_inputs=x)`` finds the residual blocks
with an identity shortcut (output = f(input) + input, same shape), ranks them by how much they
change their input on ``example_inputs`` (:func:`residual_ratio`; pass a batch of real data),
and replaces the least important ones with ``nn.Identity``: the model really loses their layers.
Blocks whose shortcut is not the identity (down-sampling blocks) are never removed, so every
stage keeps at least one block and the shapes stay valid.

Why a small tracer of our own: the block finder only needs to know whether a submodule's
``forward`` adds its own input to something, which one ``torch.fx.symbolic_trace`` of that
submodule answers; the whole-model dependency graph of :mod:`nnshrink.pruning.structured` is
about channels, not about this.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import fx, nn

from nnshrink._deprecated import module_getattr, warn
from nnshrink.core import (
    Config,
    ConfigError,
    as_input_tuple,
    check_regexes,
    forward_with_hooks,
    register_handler,
    set_submodule,
)
from nnshrink.metrics import count_macs_per_sample, count_params

_ADDS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}


@dataclasses.dataclass(frozen=True)
class BlockPruning(Config):
    """Remove whole residual blocks with an identity shortcut (depth pruning).

    Args:
        sparsity: fraction of the removable blocks to remove (rounded down). Ignored when
            ``remove`` or ``target_macs`` is set (as in ``StructuredPruning``). Deprecated
            alias: ``ratio`` (removal in 0.6).
        remove: number of blocks to remove (at most the number of removable blocks).
        target_macs: remove blocks, least important first, until the MACs per sample (counted on
            the first sample of ``example_inputs``; the whole batch still ranks the blocks) are
            <= this (an error, before any edit, if removing every candidate is not enough).
        criterion: ``"residual"`` (|f(x)| / |x| on ``example_inputs``: the smaller, the less the
            block does) or ``"random"`` (a baseline; seeded by ``seed``).
        include: regexes; when given, only blocks whose qualified name matches one are candidates.
        exclude: regexes of block names never removed.
        seed: seed for ``criterion="random"``.

    Example:
        >>> cfg = BlockPruning(remove=2)
        >>> Config.from_dict(cfg.to_dict()) == cfg
        True
    """

    kind: ClassVar[str] = "block-pruning"
    renamed: ClassVar[dict[str, Any]] = {"ratio": "sparsity"}

    sparsity: float = 0.5
    remove: int | None = None
    target_macs: int | None = None
    criterion: Literal["residual", "random"] = "residual"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    seed: int = 0

    @property
    def ratio(self) -> float:
        """Deprecated name of :attr:`sparsity` (removal in 0.6)."""
        warn("block-pruning.ratio", "block-pruning.sparsity")
        return self.sparsity

    def validate(self) -> None:
        if self.remove is not None and self.target_macs is not None:
            raise ConfigError("block-pruning: give remove (a block count) or target_macs, not both")
        if self.target_macs is not None and self.target_macs <= 0:
            raise ConfigError(f"block-pruning.target_macs must be > 0, got {self.target_macs}")
        if self.remove is not None and self.remove < 0:
            raise ConfigError(f"block-pruning.remove must be >= 0, got {self.remove}")
        if not 0 <= self.sparsity <= 1:
            raise ConfigError(f"block-pruning.sparsity must be in [0, 1], got {self.sparsity}")
        if self.criterion not in ("residual", "random"):
            raise ConfigError(
                f"block-pruning.criterion: {self.criterion!r} is not 'residual' or 'random'"
            )
        check_regexes(self.kind, (*self.include, *self.exclude))


@dataclasses.dataclass
class BlockRow:
    """One removable block: its importance and whether it was removed."""

    name: str
    importance: float
    removed: bool
    params: int
    macs: int


@dataclasses.dataclass
class BlockPruningSummary:
    """What :class:`BlockPruning` did: one row per removable block, whole-model totals (MACs
    per sample)."""

    blocks: list[BlockRow]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    @property
    def removed(self) -> list[str]:
        """Names of the removed blocks."""
        return [row.name for row in self.blocks if row.removed]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-able)."""
        return dataclasses.asdict(self)


class _ShallowTracer(fx.Tracer):
    """Traces one level: every submodule call stays a single node (its body is its own block)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _adds_own_input(module: nn.Module) -> bool:
    """True when ``module.forward`` adds its (only) input, unchanged, to another value."""
    try:
        graph = _ShallowTracer().trace(module)
    except Exception:  # noqa: BLE001 - untraceable modules are simply not candidates
        return False
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return False
    modules = dict(module.named_children())
    # the input itself, or the input passed through nn.Identity submodules (an identity shortcut)
    same = {placeholders[0]}
    for node in graph.nodes:
        if (
            node.op == "call_module"
            and isinstance(modules.get(node.target), nn.Identity)
            and node.args
            and node.args[0] in same
        ):
            same.add(node)
    for node in graph.nodes:
        is_add = (node.op == "call_function" and node.target in _ADDS) or (
            node.op == "call_method" and node.target in _ADD_METHODS
        )
        if is_add and sum(arg in same for arg in node.args[:2]) == 1:
            return True
    return False


def residual_blocks(model: nn.Module, example_inputs: Any) -> list[str]:
    """Names of the submodules that are residual blocks with an identity shortcut.

    A candidate is a submodule (not the model itself, not inside another candidate) whose
    ``forward`` takes one tensor, adds it unchanged to something, and returns the input's shape
    on ``example_inputs``: replacing it by ``nn.Identity`` keeps the model valid.

    Args:
        model: any ``nn.Module``.
        example_inputs: inputs for one forward pass (shapes are checked on them).

    Example:
        >>> from nnshrink import models
        >>> net = models.create("resnet20", in_channels=1, input_size=28)
        >>> residual_blocks(net, torch.zeros(1, 1, 28, 28))[:2]
        ['layer1.0', 'layer1.1']
    """
    named = [(n, m) for n, m in model.named_modules() if n and any(True for _ in m.children())]
    candidates = [n for n, m in named if _adds_own_input(m)]
    same_shape: dict[str, bool] = {}
    handles = []
    modules = dict(model.named_modules())
    for name in candidates:

        def hook(mod, args, out, name=name):
            ok = len(args) == 1 and torch.is_tensor(out) and out.shape == args[0].shape
            same_shape[name] = same_shape.get(name, True) and ok

        handles.append(modules[name].register_forward_hook(hook))
    forward_with_hooks(model, example_inputs, handles)
    found = [n for n in candidates if same_shape.get(n, False)]
    # outermost only: a block inside a removed block goes with it
    return [n for n in found if not any(n.startswith(f"{o}.") for o in found if o != n)]


def residual_ratio(inputs: torch.Tensor, outputs: torch.Tensor) -> float:
    """How much a block changes its input: ||out - in|| / ||in|| (0 when it is an identity).

    Args:
        inputs: the block's input.
        outputs: the block's output (same shape).

    Example:
        >>> residual_ratio(torch.ones(4), torch.ones(4) * 1.5)
        0.5
    """
    denom = float(inputs.float().norm())
    return float((outputs.float() - inputs.float()).norm()) / max(denom, 1e-12)


def block_importance(
    model: nn.Module, blocks: Sequence[str], example_inputs: Any
) -> tuple[dict[str, float], dict[str, int]]:
    """``({block: residual_ratio}, {block: its MACs})`` on ``example_inputs`` (eval, no grad)."""
    modules = dict(model.named_modules())
    scores: dict[str, float] = {}
    inputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in blocks:

        def hook(mod, args, out, name=name):
            scores[name] = residual_ratio(args[0], out)
            inputs[name] = args[0]

        handles.append(modules[name].register_forward_hook(hook))
    forward_with_hooks(model, example_inputs, handles)
    macs = {name: count_macs_per_sample(modules[name], (inputs[name],)) for name in blocks}
    return scores, macs


def _selected(name: str, config: BlockPruning) -> bool:
    if config.include and not any(re.search(p, name) for p in config.include):
        return False
    return not any(re.search(p, name) for p in config.exclude)


@register_handler(BlockPruning)
def _apply(
    model: nn.Module,
    config: BlockPruning,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> BlockPruningSummary:
    """Replace the least important removable blocks of ``model`` by ``nn.Identity`` (in place)."""
    if example_inputs is None:
        raise ValueError(
            "BlockPruning needs example_inputs (a batch of real data ranks the blocks best, e.g. "
            "the first training batch) to find the residual blocks and score them"
        )
    inputs = as_input_tuple(example_inputs)
    modules = dict(model.named_modules())
    blocks = [
        n
        for n in residual_blocks(model, inputs)
        if _selected(n, config) and (filter_fn is None or filter_fn(modules[n], n))
    ]
    if config.remove is not None and config.remove > len(blocks):
        raise ValueError(
            f"BlockPruning(remove={config.remove}): the model has only {len(blocks)} removable "
            f"residual blocks ({blocks}); lower remove or use sparsity"
        )
    scores, block_macs = block_importance(model, blocks, inputs)
    if config.criterion == "random":
        gen = torch.Generator().manual_seed(config.seed)
        scores = dict(zip(blocks, torch.rand(len(blocks), generator=gen).tolist()))
    ranked = sorted(blocks, key=lambda n: (scores[n], n))
    params_before, macs_before = count_params(model), count_macs_per_sample(model, inputs)
    if config.target_macs is not None:
        count, macs = 0, macs_before
        while macs > config.target_macs and count < len(ranked):
            macs -= block_macs[ranked[count]]
            count += 1
        if macs > config.target_macs:
            raise ValueError(
                f"BlockPruning(target_macs={config.target_macs:,}): removing all {len(blocks)} "
                f"removable blocks still leaves {macs:,} MACs; follow it with channel pruning "
                "(StructuredPruning(target_macs=...)) or raise the target"
            )
    elif config.remove is not None:
        count = config.remove
    else:
        count = int(config.sparsity * len(blocks))
    drop = set(ranked[:count])
    rows = [
        BlockRow(n, scores[n], n in drop, count_params(modules[n]), block_macs[n]) for n in blocks
    ]
    for name in ranked[:count]:
        set_submodule(model, name, nn.Identity())
    return BlockPruningSummary(
        rows, params_before, count_params(model), macs_before, count_macs_per_sample(model, inputs)
    )


__getattr__ = module_getattr(__name__)  # BlockPruningResult -> BlockPruningSummary
