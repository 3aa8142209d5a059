"""Structured pruning policy: which channels to remove, how many, and when to stop.

Level 3 of structured pruning. :class:`StructuredPruning` is the config (kind
``"structured-pruning"``) applied by ``nnshrink.compress_``; :class:`StructuredPruner` is the same
policy as an object for iterative use (``groups()``, ``plan()``, ``apply()``, ``step()``,
``prune()``). The pruned model is an ordinary ``nn.Module`` with smaller layers.

Example:
    >>> import nnshrink as ns
    >>> model = ns.models.create("resnet20", in_channels=1)
    >>> x = torch.randn(1, 1, 28, 28)
    >>> summary = ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=x)
    >>> summary.macs_after < summary.macs_before
    True
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nnshrink.core import Config, ConfigError, as_input_tuple, check_regexes, register_handler
from nnshrink.metrics import count_macs_per_sample, count_params
from nnshrink.train import Callback

from ..criteria import CRITERIA
from ..select import select_global, select_local
from .group import Group, build_groups

__all__ = [
    "BNSlimmingCallback",
    "GroupRow",
    "StructuredPruner",
    "StructuredPruning",
    "StructuredPruningSummary",
    "bn_l1_penalty",
]


@dataclasses.dataclass(frozen=True)
class StructuredPruning(Config):
    """Remove whole channels (conv filters, linear units) and shrink the layers physically.

    Args:
        ratio: fraction of channels removed per group (or overall with ``global_ranking``).
            Ignored when ``target_macs`` is set.
        criterion: channel importance: ``l1``, ``l2``, ``bn_scale`` (|gamma|), ``taylor`` (needs
            ``.grad`` on the weights), ``fpgm`` or ``random``.
        global_ranking: rank channels across all groups (scores divided by each group's mean)
            instead of removing ``ratio`` from every group.
        target_macs: prune in steps until the MACs per sample (counted on the first sample of
            ``example_inputs``) are <= this, then stop.
        round_to: kept channel counts are multiples of this (e.g. 8), or the whole group.
        ignore: module names or regexes (full match) whose output channels are kept. The layer
            producing the model output is always kept.
        per_layer: ``{regex: ratio}`` overrides for groups containing a matching module name.
        seed: seed for the ``random`` criterion.

    Example:
        >>> StructuredPruning(ratio=0.3, round_to=8).to_dict()["type"]
        'structured-pruning'
    """

    kind: ClassVar[str] = "structured-pruning"
    ratio: float = 0.5
    criterion: Literal["l1", "l2", "bn_scale", "taylor", "fpgm", "random"] = "l2"
    global_ranking: bool = False
    target_macs: int | None = None
    round_to: int = 1
    ignore: tuple[str, ...] = ()
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    seed: int = 0

    def validate(self) -> None:
        if not 0.0 <= self.ratio < 1.0:
            raise ConfigError(f"{self.kind}.ratio must be in [0, 1), got {self.ratio}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"{self.kind}.criterion must be one of {CRITERIA}")
        if self.target_macs is not None and self.target_macs <= 0:
            raise ConfigError(f"{self.kind}.target_macs must be positive, got {self.target_macs}")
        if self.round_to < 1:
            raise ConfigError(f"{self.kind}.round_to must be >= 1, got {self.round_to}")
        for name, value in self.per_layer.items():
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{self.kind}.per_layer[{name!r}] must be in [0, 1)")
        check_regexes(self.kind, (*self.ignore, *self.per_layer))


@dataclasses.dataclass
class GroupRow:
    """One summary row: the modules of a group and its channel count before and after."""

    modules: tuple[str, ...]
    channels_before: int
    channels_after: int


@dataclasses.dataclass
class StructuredPruningSummary:
    """What :func:`compress_` with :class:`StructuredPruning` did (MACs per sample)."""

    groups: list[GroupRow]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    steps: int = 1
    target_reached: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return dataclasses.asdict(self)


def bn_l1_penalty(model: nn.Module, strength: float) -> int:
    """Add the network-slimming L1 subgradient ``strength * sign(gamma)`` to every BN weight grad.

    Call it between ``loss.backward()`` and ``optimizer.step()`` (e.g. from a training callback's
    ``on_after_backward``); then prune with ``criterion="bn_scale"``.

    Args:
        model: the model being trained.
        strength: the L1 coefficient (1e-5 to 1e-4 in Liu et al. 2017).

    Returns:
        Number of BN weights penalised.

    Example:
        >>> bn = nn.BatchNorm1d(2); bn.weight.data = torch.tensor([0.5, -2.0])
        >>> bn.weight.grad = torch.zeros(2); bn_l1_penalty(bn, 0.1); bn.weight.grad.tolist()
        1
        [0.10000000149011612, -0.10000000149011612]
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            weight = module.weight
            if weight.grad is None:
                weight.grad = torch.zeros_like(weight)
            weight.grad.add_(torch.sign(weight.detach()), alpha=strength)
            count += 1
    return count


class BNSlimmingCallback(Callback):
    """Training callback applying :func:`bn_l1_penalty` after every backward pass.

    Args:
        strength: the L1 coefficient on BN scales.

    Example:
        >>> from nnshrink.train import fit  # doctest: +SKIP
        >>> fit(model, loader, epochs=10, callbacks=[BNSlimmingCallback(1e-4)])  # doctest: +SKIP
    """

    def __init__(self, strength: float = 1e-4) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.strength = strength

    def on_after_backward(self, model: nn.Module) -> None:
        bn_l1_penalty(model, self.strength)


Plan = list[tuple[Group, torch.Tensor]]


class StructuredPruner:
    """Structured pruning of one model, usable step by step.

    Args:
        model: the model to prune in place.
        example_inputs: tensor or tuple of tensors (a batch of 1 is enough).
        config: the policy (defaults to ``StructuredPruning()``).
        filter_fn: ``(module, name) -> bool``; modules it rejects are treated as ignored.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> pruner = StructuredPruner(model, torch.zeros(1, 1, 8, 8), StructuredPruning(ratio=0.5))
        >>> _ = pruner.step(0.5); model[0].out_channels
        4
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        config: StructuredPruning | None = None,
        *,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> None:
        self.model = model
        self.example_inputs = as_input_tuple(example_inputs)
        self.config = config or StructuredPruning()
        self.filter_fn = filter_fn
        self._ignore = [re.compile(p) for p in self.config.ignore]
        self._per_layer = [(re.compile(p), r) for p, r in self.config.per_layer.items()]

    def _ignored(self, name: str, module: nn.Module) -> bool:
        if self.filter_fn is not None and not self.filter_fn(module, name):
            return True
        return any(name == p.pattern or p.fullmatch(name) for p in self._ignore)

    def groups(self) -> list[Group]:
        """Prunable channel groups of the model as it is now (fresh trace)."""
        groups = build_groups(self.model, self.example_inputs, ignore=self._ignored)
        return [g for g in groups if g.prunable]

    def _ratio_override(self, group: Group, ratio: float) -> float | None:
        for pattern, override in self._per_layer:
            if any(pattern.fullmatch(name) for name in group.modules):
                if ratio == self.config.ratio or self.config.ratio == 0:
                    return override
                # a step of another size (target_macs, step()) scales the override with it
                return min(0.95, override * ratio / self.config.ratio)
        return None

    def plan(self, ratio: float | None = None) -> Plan:
        """Choose the channels to keep in every prunable group, without editing anything.

        Args:
            ratio: fraction to remove (default: ``config.ratio``). ``per_layer`` overrides replace
                ``config.ratio`` for their groups; for another ``ratio`` they are scaled by
                ``ratio / config.ratio``.

        Returns:
            ``[(group, kept_indices), ...]``; pass it to :meth:`apply`.
        """
        cfg = self.config
        ratio = cfg.ratio if ratio is None else ratio
        groups = self.groups()
        scores = [g.scores(cfg.criterion, seed=cfg.seed + i) for i, g in enumerate(groups)]
        kept: list[torch.Tensor | None] = [None] * len(groups)
        ranked = []
        for i, g in enumerate(groups):
            override = self._ratio_override(g, ratio)
            if override is not None or not cfg.global_ranking:
                r = ratio if override is None else override
                kept[i] = select_local(
                    scores[i], r, round_to=cfg.round_to, fixed=g.fixed, blocks=g.blocks
                )
            else:
                ranked.append(i)
        if ranked:
            chosen = select_global(
                [scores[i] for i in ranked],
                ratio,
                round_to=cfg.round_to,
                fixed=[groups[i].fixed for i in ranked],
                blocks=[groups[i].blocks for i in ranked],
            )
            for i, k in zip(ranked, chosen):
                kept[i] = k
        return list(zip(groups, kept))

    @staticmethod
    def apply(plan: Plan) -> list[GroupRow]:
        """Slice every group of ``plan`` (all choices were validated by ``plan``)."""
        rows = []
        for group, keep in plan:
            group.prune(keep)
            rows.append(GroupRow(group.modules, group.size, int(keep.numel())))
        return rows

    def step(self, ratio: float) -> list[GroupRow]:
        """Remove ``ratio`` of the current channels (per group, or globally); return the rows."""
        return self.apply(self.plan(ratio))

    def prune(self) -> StructuredPruningSummary:
        """Run the configured policy: one shot at ``ratio``, or steps until ``target_macs``."""
        before = build_groups(self.model, self.example_inputs, ignore=self._ignored)
        keys = [_group_key(g) for g in before if g.prunable]
        sizes_before = {_group_key(g): g.size for g in before}
        macs_before = count_macs_per_sample(self.model, self.example_inputs)
        params_before = count_params(self.model)
        steps, reached = 0, None
        target = self.config.target_macs
        if target is None:
            self.step(self.config.ratio)
            steps = 1
        else:
            steps, reached = self._prune_to_macs(target, macs_before)
        after = build_groups(self.model, self.example_inputs, ignore=self._ignored)
        after = {_group_key(g): g.size for g in after}
        rows = [GroupRow(_names(k), sizes_before[k], after.get(k, sizes_before[k])) for k in keys]
        return StructuredPruningSummary(
            groups=rows,
            macs_before=macs_before,
            macs_after=count_macs_per_sample(self.model, self.example_inputs),
            params_before=params_before,
            params_after=count_params(self.model),
            steps=steps,
            target_reached=reached,
        )

    def _prune_to_macs(self, target: int, macs: int, max_steps: int = 100) -> tuple[int, bool]:
        """Steps sized from MACs ~ width**2 (so the first step lands close); stop once <= target."""
        steps = 0
        while macs > target and steps < max_steps:
            ratio = min(0.9, max(0.01, 1.0 - math.sqrt(target / macs)))
            while True:
                plan = self.plan(ratio)
                if any(int(k.numel()) < g.size for g, k in plan) or ratio >= 0.9:
                    break
                ratio = min(0.9, ratio * 2)  # too small to remove a whole channel anywhere
            if not any(int(k.numel()) < g.size for g, k in plan):
                break  # every group is at its minimum
            self.apply(plan)
            steps += 1
            macs = count_macs_per_sample(self.model, self.example_inputs)
        return steps, macs <= target


def _group_key(group: Group) -> frozenset[tuple[str, str]]:
    return frozenset((e.name, e.dim) for e in group.edits)


def _names(key: frozenset[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(sorted({name for name, _ in key}))


@register_handler(StructuredPruning)
def _apply(
    model: nn.Module,
    config: StructuredPruning,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> StructuredPruningSummary:
    if example_inputs is None:
        raise ValueError(
            "StructuredPruning traces the model: pass example_inputs, e.g. "
            "compress_(model, cfg, example_inputs=torch.randn(1, 3, 32, 32))"
        )
    return StructuredPruner(model, example_inputs, config, filter_fn=filter_fn).prune()
