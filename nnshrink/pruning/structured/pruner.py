"""Structured pruning policy: which channels and heads to remove, how many, and when to stop.

Level 3 of structured pruning. :class:`~.config.StructuredPruning` is the config applied by
``nnshrink.compress_``; :class:`StructuredPruner` is the same policy as an object for iterative
use (``groups()``, ``plan()``, ``check()``, ``apply()``, ``step()``, ``prune()``). The pruned
model is an ordinary ``nn.Module`` with smaller layers.

Every edit is planned in full, checked on a copy of the model with one forward pass
(:mod:`.check`), and only then applied to the model, inside a
:func:`nnshrink.core.transaction`: a failure anywhere leaves the model bit-identical and raises
one :class:`~.graph.UnsupportedModelError` naming the layer or op and the fix.

Example:
    >>> import nnshrink as ns
    >>> model = ns.models.create("resnet20", in_channels=1)
    >>> x = torch.randn(1, 1, 28, 28)
    >>> summary = ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=x)
    >>> summary.macs_after < summary.macs_before
    True
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nnshrink.core import register_handler, transaction
from nnshrink.core.layers import matches
from nnshrink.core.modules import forward_with_hooks
from nnshrink.metrics import count_macs_per_sample, count_params

from ..select import select_global, select_local
from .check import PlanError, check_plan, retie, ties
from .config import GroupRow, StructuredPruning, StructuredPruningSummary
from .graph import DependencyGraph, UnsupportedModelError
from .group import Group, build_groups, input_sq_of, reads_inputs
from .latency_table import LatencyTable, choose_counts, sparsity_for_latency
from .layer_ops import ops_for
from .reconstruct import reconstruct
from .slimming import BNSlimmingCallback, bn_l1_penalty

__all__ = [
    "BNSlimmingCallback",
    "GroupRow",
    "StructuredPruner",
    "StructuredPruning",
    "StructuredPruningSummary",
    "bn_l1_penalty",
]

Plan = list[tuple[Group, torch.Tensor]]
_PRODUCING = ("out", "heads")


def _weighted(module: nn.Module) -> bool:
    ops = ops_for(module)
    return ops is not None and ops.coupling != "shared" and any(True for _ in module.parameters())


def _key(group: Group) -> frozenset[tuple[str, str]]:
    return frozenset((e.name, e.dim) for e in group.edits)


def _names(key: frozenset[tuple[str, str]]) -> tuple[str, ...]:
    return tuple(sorted({name for name, _ in key}))


def _removes(plan: Plan) -> bool:
    return any(int(k.numel()) < g.size for g, k in plan)


class StructuredPruner:
    """Structured pruning of one model, usable step by step.

    Args:
        model: the model to prune in place.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs (a
            batch of 1 is enough; ``pixel_values`` / ``input_ids`` for transformers).
        config: the policy (defaults to ``StructuredPruning()``).
        filter_fn: ``(module, name) -> bool``; modules it rejects are treated as excluded.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
        >>> pruner = StructuredPruner(model, torch.zeros(1, 1, 8, 8), StructuredPruning())
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
        if example_inputs is None:
            raise ValueError(
                "StructuredPruner needs example_inputs (e.g. torch.randn(1, 3, 32, 32))"
            )
        self.model = model
        self.example_inputs = example_inputs
        self.config = config or StructuredPruning()
        self.filter_fn = filter_fn
        self.skipped: list[str] = []
        self.attributes: dict[str, dict[str, Any]] = {}
        self.tracer: str | None = None
        self._dropped: set[frozenset[tuple[str, str]]] = set()
        self._drop_reasons: list[str] = []
        self._graph: DependencyGraph | None = None
        self._table: LatencyTable | None = None
        self.table_rows: list[dict[str, Any]] = []
        self.kept_outputs: dict[str, torch.Tensor] = {}
        self._select_layers()

    # ------------------------------------------------------------------ layer selection
    def _select_layers(self) -> None:
        cfg = self.config
        layers = [(n, m) for n, m in self.model.named_modules() if n and _weighted(m)]
        every = dataclasses.replace(cfg, include=())
        picked = every.select(layers, filter_fn=self.filter_fn, amount_field="sparsity")
        self._overrides = {layer.name: layer.overrides for layer in picked}
        self._fixed_names = {n for n, _ in layers} - set(self._overrides)
        self._included = None
        if cfg.include:
            chosen = cfg.select(layers, filter_fn=self.filter_fn, amount_field="sparsity")
            self._included = {layer.name for layer in chosen}

    def _ignored(self, name: str, module: nn.Module) -> bool:
        """Output channels of this module are kept (``exclude``, ``per_layer: None``, filter)."""
        if name in self._fixed_names:
            return True
        if self.filter_fn is not None and not self.filter_fn(module, name):
            return True
        return any(matches(p, name, module, None) for p in self.config.exclude if p[0] != "@")

    def _override(self, group: Group, heads: bool) -> float | None:
        """The ``per_layer`` amount of the first layer of the group that has one (producers
        first), or ``None``."""
        producers = [e.name for e in group.edits if e.dim in _PRODUCING]
        others = [e.name for e in group.edits if e.dim not in _PRODUCING]
        for name in dict.fromkeys(producers + others):
            if name in self._overrides:
                found = self._overrides[name]
            else:
                found = self.config.overrides_for(name, None, amount_field="sparsity")
            if not found:
                continue
            value = found.get("head_sparsity", found.get("sparsity")) if heads else None
            value = value if heads else found.get("sparsity")
            if value is not None:
                return value
        return None

    # ------------------------------------------------------------------ groups and plans
    def groups(self) -> list[Group]:
        """Prunable channel and head groups of the model as it is now (fresh trace)."""
        cfg = self.config
        graph = DependencyGraph(self.model, self.example_inputs, ignore=self._ignored,
                                strict=cfg.strict, allow_stats=cfg.prune_hidden)  # fmt: skip
        self._graph, self.tracer = graph, graph.tracer
        skipped, hidden = list(graph.skipped), []
        out = []
        for g in build_groups(self.model, None, graph=graph):
            if not g.prunable or _key(g) in self._dropped:
                continue
            if g.kind == "hidden" and not cfg.prune_hidden:
                hidden.append(g)
                continue
            if self._included is not None and not any(
                e.name in self._included for e in g.edits if e.dim in _PRODUCING
            ):
                continue
            out.append(g)
        if hidden:
            names = sorted({e.name or type(self.model).__name__ for g in hidden for e in g.edits})
            skipped.append(f"hidden width kept (prune_hidden=False): {len(hidden)} group(s), "
                           f"{', '.join(names[:6])}{' ...' if len(names) > 6 else ''}")  # fmt: skip
        self.skipped = skipped + self._drop_reasons
        return out

    def plan(self, ratio: float | None = None, head_ratio: float | None = None, *,
             groups: list[Group] | None = None) -> Plan:  # fmt: skip
        """Choose the channels (and heads) to keep in every prunable group; edits nothing.

        Args:
            ratio: fraction of channels to remove (default: ``config.sparsity``). ``per_layer``
                overrides replace it for their groups; for another ``ratio`` they are scaled by
                ``ratio / config.sparsity``.
            head_ratio: fraction of heads to remove (default: ``config.head_sparsity``, scaled
                the same way).
            groups: the groups of :meth:`groups` if the model has not changed since (saves a
                trace).

        Returns:
            ``[(group, kept_indices), ...]``; pass it to :meth:`apply` (or :meth:`check`).
        """
        cfg = self.config
        ratio = cfg.sparsity if ratio is None else ratio
        scale = 1.0 if ratio == cfg.sparsity or cfg.sparsity == 0 else ratio / cfg.sparsity
        if head_ratio is None:
            head_ratio = min(0.95, cfg.head_amount * scale) if cfg.sparsity else ratio
        groups = self.groups() if groups is None else groups
        stats = self.input_statistics() if cfg.criterion == "activation" else None
        scores = [g.scores(cfg.criterion, seed=cfg.seed + i, input_sq=stats)
                  for i, g in enumerate(groups)]  # fmt: skip
        kept: list[torch.Tensor | None] = [None] * len(groups)
        ranked: dict[str, list[int]] = {"heads": [], "channels": []}
        for i, g in enumerate(groups):
            heads = g.kind == "heads"
            override = self._override(g, heads)
            if override is not None:
                override = min(0.95, override * scale)
            round_to = 1 if heads else cfg.round_to
            if override is not None or cfg.scope == "layer":
                r = override if override is not None else (head_ratio if heads else ratio)
                kept[i] = select_local(scores[i], r, round_to=round_to, fixed=g.fixed,
                                       blocks=g.blocks)  # fmt: skip
            else:
                ranked["heads" if heads else "channels"].append(i)
        for kind, members in ranked.items():
            if not members:
                continue
            chosen = select_global(
                [scores[i] for i in members],
                head_ratio if kind == "heads" else ratio,
                round_to=1 if kind == "heads" else cfg.round_to,
                fixed=[groups[i].fixed for i in members],
                blocks=[groups[i].blocks for i in members],
            )
            for i, k in zip(members, chosen):
                kept[i] = k
        if cfg.latency_table:
            kept, self.table_rows = choose_counts(groups, kept, scores, self.latency_table(),
                                                  round_to=cfg.round_to)  # fmt: skip
        return [(g, _cover_producers(g, k, sc)) for g, k, sc in zip(groups, kept, scores)]

    def latency_table(self) -> LatencyTable:
        """The per-layer latency table (``latency_table=True``), shapes recorded from the model
        as it is now; entries measured so far are kept."""
        if self._table is None:
            self._table = LatencyTable(self.model, self.example_inputs,
                                       self.config.latency_runtime)  # fmt: skip
        else:
            self._table.record(self.model, self.example_inputs)
        return self._table

    def input_statistics(self) -> dict[nn.Module, torch.Tensor]:
        """``{layer: sum of x_j² per input j}`` of every Linear / Conv1D / ungrouped conv, from
        one eval-mode forward pass on ``example_inputs`` (the ``activation`` criterion)."""
        stats: dict[nn.Module, torch.Tensor] = {}

        def hook(module: nn.Module, args: Any) -> None:  # returns None: inputs unchanged
            if args and torch.is_tensor(args[0]):
                part = input_sq_of(module, args[0])
                stats[module] = part if module not in stats else stats[module] + part

        handles = [m.register_forward_pre_hook(hook) for m in self.model.modules()
                   if reads_inputs(m)]  # fmt: skip
        forward_with_hooks(self.model, self.example_inputs, handles)
        return stats

    @staticmethod
    def apply(plan: Plan) -> list[GroupRow]:
        """Slice every group of ``plan`` (no check, no transaction: :meth:`step` does both)."""
        return _apply_plan(plan)[0]

    def check(self, plan: Plan) -> None:
        """Try ``plan`` on a copy of the model with one forward pass (the model is untouched).

        Raises:
            UnsupportedModelError: the edit breaks the forward; names the module and the fix.
        """
        try:
            self._check(plan)
        except PlanError as err:
            raise UnsupportedModelError(self._explain(err)) from err

    def _check(self, plan: Plan) -> None:
        shapes = self._graph.output_shapes if self._graph is not None else None
        check_plan(self.model, lambda root: _apply_plan([(g.on(root), k) for g, k in plan]),
                   self.example_inputs, shapes)  # fmt: skip

    def _explain(self, err: PlanError) -> str:
        keep = f"exclude=({err.module!r},) keeps it; " if err.module else ""
        return (
            f"structured pruning would break the model, so nothing was changed: {err}. Fix: "
            "where the forward reshapes with a size written as a number or taken from another "
            "tensor (e.g. x.view(B, T, C) after attention), write -1 or the tensor's own size; "
            f"{keep}or pass strict=False to skip the groups that break and prune the rest."
        )

    def _checked(self, ratio: float, plan: Plan | None = None, head_ratio: float | None = None
                 ) -> Plan:  # fmt: skip
        """A plan that passed :meth:`check` (``strict=False``: groups that break are dropped)."""
        while True:
            plan = plan if plan is not None else self.plan(ratio, head_ratio)
            if not _removes(plan):
                return plan
            try:
                self._check(plan)
                return plan
            except PlanError as err:
                culprits = [
                    g for g, k in plan if int(k.numel()) < g.size and _touches(g, err.module)
                ]
                if self.config.strict or not culprits:
                    raise UnsupportedModelError(self._explain(err)) from err
                self._dropped.update(_key(g) for g in culprits)
                names = sorted({e.name for g in culprits for e in g.edits})
                reason = f"{err}: kept {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
                self._drop_reasons.append(reason)
                warnings.warn(f"structured pruning skipped groups: {reason}", stacklevel=3)
                plan = None

    def _commit(self, plan: Plan) -> list[GroupRow]:
        with transaction(self.model):
            rows, changed = _apply_plan(plan)
        if self.config.reconstruct:
            self._track_kept_outputs(plan)
        for owner, attrs in changed.items():
            merged = self.attributes.setdefault(owner, {})
            for attr, (old, new) in attrs.items():
                merged[attr] = [merged.get(attr, [old])[0], new]
        return rows

    def _track_kept_outputs(self, plan: Plan) -> None:
        """Which original output positions each layer still has (what reconstruction matches),
        composed over every committed step."""
        for group, keep in plan:
            mask = torch.zeros(group.size, dtype=torch.bool)
            mask[keep] = True
            for e in group.edits:
                if e.dim == "out":
                    kept = torch.nonzero(mask[e.index]).reshape(-1)
                    prev = self.kept_outputs.get(e.name)
                    self.kept_outputs[e.name] = kept if prev is None else prev[kept]

    def step(self, ratio: float, head_ratio: float | None = None) -> list[GroupRow]:
        """Remove ``ratio`` of the current channels (per group, or globally): plan, check on a
        copy, apply in a transaction. Returns the rows of the pruned groups."""
        return self._commit(self._checked(ratio, self.plan(ratio, head_ratio), head_ratio))

    def prune(self) -> StructuredPruningSummary:
        """Run the configured policy: one shot at ``sparsity``, or steps until ``target_macs``.

        Raises:
            UnsupportedModelError: nothing prunable (with ``strict``), an op the graph cannot
                follow, or an edit that would break the model; the model is unchanged.
        """
        cfg = self.config
        before = self.groups()
        if not before:
            why = "; ".join(self.skipped) or "every channel is an input, an output or excluded"
            msg = f"no prunable groups in {type(self.model).__name__} ({why})"
            if cfg.strict:
                raise UnsupportedModelError(
                    msg + ". Nothing was changed. Fix: check exclude/include, pass "
                    "prune_hidden=True to prune a transformer's hidden width, or strict=False to "
                    "accept pruning nothing."
                )
            warnings.warn(msg, stacklevel=2)
        keys = [_key(g) for g in before]
        sizes = {_key(g): (g.size, g.kind) for g in before}
        dense = copy.deepcopy(self.model) if cfg.reconstruct and before else None
        macs_before, params_before = self._macs(), count_params(self.model)
        steps, reached, applied, timing = 0, None, {}, {}
        if cfg.target_latency_ms is not None and before:
            sparsity, reached, timing = sparsity_for_latency(self, cfg.target_latency_ms)
            if sparsity > 0:
                plan = self._checked(sparsity, self.plan(sparsity, groups=before))
                applied = {_key(g): int(k.numel()) for g, k in plan}
                self._commit(plan)
                steps = 1
        elif cfg.target_macs is not None:
            if macs_before is None:
                raise ValueError("target_macs needs tensor example_inputs to count MACs")
            steps, reached = self._prune_to_macs(cfg.target_macs, macs_before)
        elif before:
            plan = self._checked(cfg.sparsity, self.plan(cfg.sparsity, groups=before))
            applied = {_key(g): int(k.numel()) for g, k in plan}
            self._commit(plan)
            steps = 1
        after = applied if steps == 1 and cfg.target_macs is None else {}
        if steps and not after:
            graph = DependencyGraph(self.model, self.example_inputs, ignore=self._ignored,
                                    strict=False, allow_stats=cfg.prune_hidden)  # fmt: skip
            after = {_key(g): g.size for g in build_groups(self.model, None, graph=graph)}
        rows = [GroupRow(_names(k), sizes[k][0], after.get(k, sizes[k][0]), sizes[k][1])
                for k in keys if k not in self._dropped]  # fmt: skip
        refit = []
        if dense is not None and steps:
            # every layer that read a channel or head of a group that lost some
            shrunk = [g for g in before if after.get(_key(g), g.size) < g.size]
            readers = [e.name for g in shrunk for e in g.edits if e.dim not in _PRODUCING]
            refit = reconstruct(self.model, dense, self.example_inputs, readers,
                                kept_outputs=self.kept_outputs)  # fmt: skip
        return StructuredPruningSummary(
            groups=rows,
            macs_before=macs_before,
            macs_after=self._macs(),
            params_before=params_before,
            params_after=count_params(self.model),
            steps=steps,
            target_reached=reached,
            tracer=self.tracer or "fx",
            attributes=self.attributes,
            skipped=list(self.skipped),
            latency_table=list(self.table_rows) if steps else [],
            reconstructed=refit,
            **timing,
        )

    def _macs(self) -> int | None:
        try:
            return count_macs_per_sample(self.model, self.example_inputs)
        except Exception:  # noqa: BLE001 - keyword inputs the MAC counter cannot pass
            return None

    def _prune_to_macs(self, target: int, macs: int, max_steps: int = 100) -> tuple[int, bool]:
        """Steps sized from MACs ~ width**2 (so the first step lands close); stop once <= target."""
        steps = 0
        while macs > target and steps < max_steps:
            ratio = min(0.9, max(0.01, 1.0 - math.sqrt(target / macs)))
            while True:
                plan = self.plan(ratio, ratio)
                if _removes(plan) or ratio >= 0.9:
                    break
                ratio = min(0.9, ratio * 2)  # too small to remove a whole channel anywhere
            if not _removes(plan):
                break  # every group is at its minimum
            self._commit(self._checked(ratio, plan, ratio))
            steps += 1
            macs = self._macs()
        return steps, macs <= target


def _cover_producers(group: Group, keep: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``keep`` plus, for every layer producing only part of the group, its best channel if it
    would otherwise lose all of them.

    A group can span layers that each produce a subset of its channels (option-A shortcuts pad
    a 16-channel stage into the 32- and 64-channel ones): at high sparsity the best-scored
    channels may all lie outside one layer's subset, which would leave that layer with no
    output. Keeping its best channel costs at most one channel per such layer.
    """
    if keep is None or keep.numel() == 0:
        return keep
    kept = set(keep.tolist())
    added = False
    for edit in group.edits:
        if edit.dim not in _PRODUCING or edit.index.numel() in (0, group.size):
            continue
        owned = edit.index.tolist()
        if not kept.intersection(owned):
            kept.add(max(owned, key=lambda c: float(scores[c])))
            added = True
    return torch.as_tensor(sorted(kept), dtype=keep.dtype) if added else keep


def _touches(group: Group, module: str) -> bool:
    if not module:
        return True
    return any(e.name == module or e.name.startswith(module + ".") for e in group.edits)


def _apply_plan(plan: Plan) -> tuple[list[GroupRow], dict[str, dict[str, Any]]]:
    """Slice every group of ``plan``, re-tie shared parameters; rows and attribute changes."""
    root = next((g.root for g, _ in plan if g.root is not None), None)
    tied = ties(root) if root is not None else []
    rows, changed = [], {}
    for group, keep in plan:
        for owner, attrs in group.prune(keep).items():
            changed.setdefault(owner, {}).update(attrs)
        rows.append(GroupRow(group.modules, group.size, int(keep.numel()), group.kind))
    if root is not None:
        retie(root, tied)
    return rows, changed


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
