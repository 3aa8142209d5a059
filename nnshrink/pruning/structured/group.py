"""Groups of coupled channel edits: prune them together, score them together.

Level 2 of structured pruning. A :class:`Group` is a set of module dimensions (conv/linear
outputs, the next layers' inputs, norm layers, residual partners, attention heads, ...) that
share channels according to the :class:`~.graph.DependencyGraph`. Its channels are numbered
``0..size-1``; every edit maps each of its positions to one group channel (a flatten→linear input
maps H*W consecutive features to the same channel, a query projection maps ``head_dim`` rows to
the same head). ``Group.prune(keep_idx)`` slices every edit consistently with :mod:`.layer_ops`
(replacing a layer first where its type cannot hold the new shape, e.g.
``nn.MultiheadAttention``) and updates the head attributes of attention modules
(:mod:`.heads`); ``Group.scores(criterion)`` aggregates per-channel importance over the group.

Each group has a ``kind``: ``"heads"`` (attention heads: the channels are whole heads),
``"hidden"`` (the width attention reads, i.e. the residual stream of a transformer, and
embedding outputs) or ``"channels"`` (everything else: conv filters, MLP neurons).

Example:
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> groups = [g for g in build_groups(model, torch.zeros(1, 1, 8, 8)) if g.prunable]
    >>> groups[0].modules, groups[0].size, groups[0].kind
    (('0', '1', '3'), 4, 'channels')
    >>> _ = groups[0].prune([0, 3]); model[3].in_channels
    2
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from nnshrink.core import set_submodule

from .. import criteria as _criteria
from .graph import DependencyGraph
from .heads import update_head_attributes
from .layer_ops import ops_for, slice_tensor_attr, weight_axis

__all__ = ["Group", "GroupEdit", "build_groups"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm,
          getattr(nn, "RMSNorm", nn.LayerNorm))  # fmt: skip
_PRODUCING = ("out", "heads")


@dataclasses.dataclass
class GroupEdit:
    """One module dimension of a group: position p of its ``dim`` is channel ``index[p]``."""

    name: str
    module: nn.Module
    dim: str
    index: torch.Tensor


@dataclasses.dataclass
class GroupSplit:
    """A :class:`~.graph.HeadSplit` in group terms: unit u of the split is channel ``index[u]``."""

    owner: str
    head_dim: int
    index: torch.Tensor
    pieces: int = 1  # units per head: 3 for a fused (q/k/v, heads) split


@dataclasses.dataclass
class Group:
    """Coupled module dimensions that must lose the same channels.

    Attributes:
        edits: the module dimensions and their index mappings.
        size: number of channels in the group.
        fixed: bool mask of channels that must be kept (model inputs/outputs, ignored layers, ...).
        blocks: block id per channel when blocks must keep equal counts (grouped conv, GroupNorm,
            chunk), else ``None``.
        blocked: why the group cannot be pruned at all (``None`` when it can).
        kind: ``"heads"``, ``"hidden"`` or ``"channels"`` (see the module docstring).
        root: the model the edits' names refer to (modules are looked up by name when pruning,
            so a layer replaced by an equivalent one is found).
        splits: where the group's heads were split out of projections (attribute updates).
    """

    edits: list[GroupEdit]
    size: int
    fixed: torch.Tensor
    blocks: torch.Tensor | None = None
    blocked: str | None = None
    kind: str = "channels"
    root: nn.Module | None = dataclasses.field(default=None, repr=False)
    splits: list[GroupSplit] = dataclasses.field(default_factory=list, repr=False)
    _done: bool = dataclasses.field(default=False, repr=False)

    @property
    def modules(self) -> tuple[str, ...]:
        """Names of the modules touched, in execution order."""
        return tuple(dict.fromkeys(e.name for e in self.edits))

    @property
    def prunable(self) -> bool:
        """Whether at least one channel could be removed."""
        return self.blocked is None and not bool(self.fixed.all()) and self.size > 1

    def on(self, root: nn.Module) -> Group:
        """The same group for another model with the same module names (e.g. a deep copy)."""
        edits = [dataclasses.replace(e, module=root.get_submodule(e.name)) for e in self.edits]
        return dataclasses.replace(self, edits=edits, root=root, _done=False)

    def scores(
        self, criterion: str = "l2", seed: int = 0, input_sq: dict | None = None
    ) -> torch.Tensor:
        """Importance of each channel (float64, higher = keep), averaged over the group's layers.

        Weighted layers (conv, linear, attention heads) are scored on their output dimension;
        ``bn_scale`` scores norm layers' ``|gamma|`` (groups without one fall back to ``l2``); a
        group without any weighted output (rare) is scored on the consumers' input dimension. A
        channel's score is the mean over the layers that produce it, so that in a residual group
        spanning several stages (option-A shortcuts) early channels, produced by more layers,
        are not favoured; a head's score is the mean over its rows in q, k and v.

        ``activation`` scores a channel by what its consumers read from it:
        ``sqrt(sum ||W[:, j]||² ||X_j||²)`` over the consumers' input positions ``j`` of the
        channel (``input_sq``: ``{module: sum of x_j² per input}``, which
        :class:`~.pruner.StructuredPruner` collects from ``example_inputs``); a group with no
        measured consumer falls back to ``l2``.

        Args:
            criterion: one of ``nnshrink.pruning.criteria.CRITERIA``.
            seed: seed for ``"random"``.
            input_sq: input statistics per module, for ``"activation"``.
        """
        if criterion not in _criteria.CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; choose from {_criteria.CRITERIA}")
        if criterion == "random":
            return _criteria.random(self.size, seed)
        if criterion == "activation":
            if input_sq is None:
                raise ValueError(
                    "criterion 'activation' needs input statistics: prune through "
                    "StructuredPruner / compress_, which collect them from example_inputs"
                )
            scores = self._activation(input_sq)
            if scores is not None:
                return scores
            criterion = "l2"
        if criterion == "bn_scale":
            scores = self._mean(criterion, lambda e: isinstance(e.module, _NORMS))
            if scores is not None:
                return scores
            criterion = "l2"
        scores = self._mean(criterion, lambda e: e.dim in _PRODUCING)
        if scores is None:
            scores = self._mean(criterion, lambda e: e.dim == "in")
        return scores if scores is not None else torch.zeros(self.size, dtype=torch.float64)

    def _activation(self, input_sq: dict) -> torch.Tensor | None:
        total = torch.zeros(self.size, dtype=torch.float64)
        found = False
        for edit in self.edits:
            if edit.dim != "in" or edit.module not in input_sq:
                continue
            weight_sq = input_weight_sq(edit.module)
            x_sq = input_sq[edit.module]
            if weight_sq is None or weight_sq.numel() != edit.index.numel():
                continue
            if x_sq.shape != weight_sq.shape:
                continue
            part = _criteria.activation(weight_sq.detach().cpu(), x_sq.detach().cpu())
            total.index_add_(0, edit.index, part)
            found = True
        return total.sqrt() if found else None

    def _mean(self, criterion: str, use: Callable[[GroupEdit], bool]) -> torch.Tensor | None:
        total = torch.zeros(self.size, dtype=torch.float64)
        count = torch.zeros(self.size, dtype=torch.float64)
        for edit in self.edits:
            if not use(edit):
                continue
            s = _edit_scores(edit, criterion)
            if s is not None and s.numel() == edit.index.numel():
                # scores are per channel (small): gather them on the CPU whatever the model's device
                s = s.detach().to("cpu", torch.float64)
                total.index_add_(0, edit.index, s)
                count.index_add_(0, edit.index, torch.ones_like(s))
        if not bool((count > 0).any()):
            return None
        return total / count.clamp(min=1)

    def check(self, keep_idx: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Validate ``keep_idx`` for this group; return the kept-channel mask (nothing edited).

        Raises:
            ValueError: a bad ``keep_idx``, or a blocked / already pruned group.
        """
        if self._done:
            raise ValueError("this group was already pruned; rebuild the groups (indices moved)")
        if self.blocked is not None:
            raise ValueError(f"group {self.modules} cannot be pruned: {self.blocked}")
        keep = torch.sort(torch.as_tensor(keep_idx, dtype=torch.long).reshape(-1)).values
        if keep.numel() == 0 or torch.unique(keep).numel() != keep.numel():
            raise ValueError("keep_idx must be a non-empty set of distinct channel indices")
        if keep[0] < 0 or keep[-1] >= self.size:
            raise ValueError(f"keep_idx out of range [0, {self.size})")
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[keep] = True
        if bool((self.fixed & ~mask).any()):
            missing = torch.nonzero(self.fixed & ~mask).reshape(-1).tolist()
            raise ValueError(
                f"channels {missing[:8]} are fixed (inputs/outputs/excluded) and must stay"
            )
        if self.blocks is not None:
            counts = torch.bincount(self.blocks[mask], minlength=int(self.blocks.max()) + 1)
            if not bool((counts == counts[0]).all()):
                raise ValueError(
                    f"keep the same number of channels per block; got {counts.tolist()}"
                )
        return mask

    def prune(self, keep_idx: Sequence[int] | torch.Tensor) -> dict[str, dict[str, Any]]:
        """Keep only channels ``keep_idx`` in every module of the group (in place).

        Args:
            keep_idx: group channel indices to keep; must contain every fixed channel and, with
                ``blocks``, the same number per block.

        Returns:
            ``{module name: {attribute: (old, new)}}`` of the head attributes updated.

        Raises:
            ValueError: on a bad ``keep_idx`` or a blocked/already pruned group (nothing edited).
        """
        mask = self.check(keep_idx)
        self._done = True
        if bool(mask.all()):
            return {}
        for edit in self.edits:
            positions = torch.nonzero(mask[edit.index]).reshape(-1)
            module = self._resolve(edit)
            if edit.dim.startswith("param:"):
                _, attr, axis = edit.dim.split(":")
                slice_tensor_attr(module, attr, positions, int(axis))
                continue
            ops = ops_for(module)
            if ops is None:
                raise TypeError(f"no slicer for {type(module).__name__} ({edit.name})")
            ops.slicer(edit.dim)(module, positions)
        return self._update_heads(mask)

    def _resolve(self, edit: GroupEdit) -> nn.Module:
        """The module to slice, replaced first if its type cannot hold the new shape."""
        module = self.root.get_submodule(edit.name) if self.root is not None else edit.module
        ops = ops_for(module)
        if ops is not None and ops.convert is not None:
            new = ops.convert(module)
            if new is not module:
                if self.root is None or not edit.name:
                    raise ValueError(f"{edit.name!r} must be replaced; build groups with a root")
                set_submodule(self.root, edit.name, new)
                module = new
        return module

    def _update_heads(self, mask: torch.Tensor) -> dict[str, dict[str, Any]]:
        by_owner: dict[str, list[GroupSplit]] = {}
        for split in self.splits:
            by_owner.setdefault(split.owner, []).append(split)
        changed = {}
        for owner, splits in by_owner.items():
            module = self.root.get_submodule(owner) if self.root is not None else None
            if module is None:
                continue
            counts = [(s.index.numel() // s.pieces, int(mask[s.index].sum()) // s.pieces)
                      for s in splits]  # fmt: skip
            done = update_head_attributes(module, counts, splits[0].head_dim)
            if done:
                changed[owner] = done
        return changed

    def describe(self) -> str:
        """One line: kind, modules and channel count."""
        return f"{self.size} {self.kind}: " + ", ".join(f"{e.name}.{e.dim}" for e in self.edits)


def reads_inputs(module: nn.Module) -> bool:
    """Layers whose per-input statistics the ``activation`` criterion uses."""
    if isinstance(module, nn.Conv2d):
        return module.groups == 1
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def input_weight_sq(module: nn.Module) -> torch.Tensor | None:
    """``||W[:, j]||²`` per input ``j`` of a Linear, Hugging Face ``Conv1D`` or ungrouped conv."""
    weight = getattr(module, "weight", None)
    if weight is None or not reads_inputs(module):
        return None
    w = weight.detach().to(torch.float64)
    if isinstance(module, nn.Conv2d):
        return w.pow(2).sum(dim=(0, 2, 3))
    if isinstance(module, nn.Linear):
        return w.pow(2).sum(dim=0)
    return w.pow(2).sum(dim=1)  # Conv1D stores (in, out)


def input_sq_of(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x_j²`` per input ``j`` over every row (token, pixel, sample) of ``x``."""
    x = x.detach().to(torch.float64)
    if isinstance(module, nn.Conv2d):
        return x.pow(2).sum(dim=(0, 2, 3)) if x.dim() == 4 else x.pow(2).sum(dim=(1, 2))
    return x.reshape(-1, x.shape[-1]).pow(2).sum(dim=0)


def _edit_scores(edit: GroupEdit, criterion: str) -> torch.Tensor | None:
    module = edit.module
    if criterion == "bn_scale":
        weight = getattr(module, "weight", None)
        return None if weight is None else _criteria.bn_scale(weight)
    if edit.dim.startswith("param:"):
        return None
    ops = ops_for(module)
    if ops is not None and ops.weights is not None:
        tensors = ops.weights(module, edit.dim)
    else:
        axis = weight_axis(module, edit.dim)
        weight = getattr(module, "weight", None)
        tensors = [] if axis is None or weight is None else [(weight, weight.grad, axis)]
    if not tensors:
        return None
    n = tensors[0][0].shape[tensors[0][2]]
    feats = torch.cat([t.detach().movedim(a, 0).reshape(n, -1) for t, _, a in tensors], dim=1)
    if criterion == "taylor":
        if any(g is None for _, g, _ in tensors):
            raise ValueError(
                f"criterion 'taylor' needs gradients but {edit.name} has no .grad: run "
                "loss.backward() on a batch before pruning"
            )
        grads = torch.cat([g.detach().movedim(a, 0).reshape(n, -1) for _, g, a in tensors], 1)
        return _criteria.taylor(feats, grads, 0)
    return getattr(_criteria, criterion)(feats, 0)


def build_groups(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignore: Callable[[str, nn.Module], bool] | None = None,
    graph: DependencyGraph | None = None,
    strict: bool = True,
) -> list[Group]:
    """Trace ``model`` and return its channel groups (prunable or not), in execution order.

    Args:
        model: the model (not modified).
        example_inputs: tensor, tuple of tensors or dict of keyword inputs for one forward pass.
        ignore: ``(name, module) -> bool``; the output channels of modules it accepts are kept.
        graph: a prebuilt :class:`DependencyGraph` (otherwise one is built with ``ignore``).
        strict: see :class:`DependencyGraph`.

    Raises:
        UnsupportedModelError: see :class:`DependencyGraph`.
    """
    graph = graph or DependencyGraph(model, example_inputs, ignore=ignore, strict=strict)
    # connect roots that appear in the same edit: each connected component is a group
    comp: dict[int, int] = {}

    def find(r: int) -> int:
        while comp.setdefault(r, r) != r:
            comp[r] = comp[comp[r]]
            r = comp[r]
        return r

    edit_roots = [[graph.find(label) for label in e.labels] for e in graph.edits]
    for roots in edit_roots:
        for r in roots[1:]:
            a, b = find(roots[0]), find(r)
            if a != b:
                comp[b] = a
    members: dict[int, list[int]] = {}
    for i, roots in enumerate(edit_roots):
        if roots:
            members.setdefault(find(roots[0]), []).append(i)
    groups = []
    group_of_root: dict[int, tuple[int, dict[int, int]]] = {}
    roots_of_group: list[set[int]] = []
    for edit_ids in members.values():
        roots_of_group.append({r for i in edit_ids for r in edit_roots[i]})
        channel: dict[int, int] = {}
        for i in edit_ids:
            for r in edit_roots[i]:
                channel.setdefault(r, len(channel))
        edits, fixed = [], torch.zeros(len(channel), dtype=torch.bool)
        for r, c in channel.items():
            fixed[c] = graph._fixed[r]
        for i in edit_ids:
            e = graph.edits[i]
            index = torch.tensor([channel[r] for r in edit_roots[i]], dtype=torch.long)
            edits.append(GroupEdit(e.name, e.module, e.dim, index))
        for r in channel:
            group_of_root[r] = (len(groups), channel)
        groups.append(Group(edits, len(channel), fixed, root=model))
    _attach_blocks(graph, groups, group_of_root)
    _attach_heads(graph, groups, group_of_root, roots_of_group)
    return groups


def _attach_heads(
    graph: DependencyGraph, groups: list[Group], group_of_root: dict, roots_of_group: list
) -> None:
    """Kinds (heads / hidden / channels) and the head splits of each group."""
    head_roots = {graph.find(label) for label in graph.head_labels}
    for split in graph.splits:
        roots = [graph.find(label) for label in split.labels]
        owners = {group_of_root[r][0] for r in roots if r in group_of_root}
        if len(owners) != 1:
            continue  # heads not sliced anywhere, or spread over groups: no attribute to update
        g, channel = group_of_root[roots[0]]
        index = torch.tensor([channel[r] for r in roots], dtype=torch.long)
        pieces = math.prod(split.sizes[:-1])
        groups[g].splits.append(GroupSplit(split.owner, split.head_dim, index, pieces))
    producers = set()
    for g, roots in zip(groups, roots_of_group):
        if roots & head_roots:
            g.kind = "heads"
            producers.update(e.name for e in g.edits if e.dim in _PRODUCING)
    for g in groups:
        reads_attention = any(e.dim in ("in", "in_k", "in_v") and e.name in producers
                              for e in g.edits)  # fmt: skip
        embeds = any(isinstance(e.module, nn.Embedding) and e.dim == "out" for e in g.edits)
        if reads_attention or embeds:
            g.kind = "hidden"


def _block_ids(roots: list[list[int]], channel: dict[int, int], size: int) -> list[int] | None:
    """Block id of every group channel, or ``None`` unless the blocks tile the group evenly."""
    ids = [-1] * size
    for b, block in enumerate(roots):
        for r in block:
            c = channel.get(r)
            if c is None or ids[c] not in (-1, b):
                return None
            ids[c] = b
    counts = [ids.count(b) for b in range(len(roots))]
    if -1 in ids or len(set(counts)) != 1:
        return None  # part of the group is unconstrained, or blocks of unequal size
    return ids


def _attach_blocks(graph: DependencyGraph, groups: list[Group], group_of_root: dict) -> None:
    """Turn label-block constraints into per-group block ids (or mark the group blocked).

    Only one block structure per group is supported (e.g. a grouped conv, a GroupNorm with the
    same number of groups, a chunk); anything else blocks the group: it is left unpruned. A
    constraint whose blocks hold the same channels (GPT-2's fused q/k/v split into three, once
    attention has paired their heads) holds whatever is kept, and is dropped.
    """
    seen: dict[int, list[int]] = {}
    for why, blocks in graph.constraints:
        roots = [[graph.find(label) for label in block] for block in blocks]
        first = next((r for block in roots for r in block if r in group_of_root), None)
        if first is None:
            continue  # the constrained tensor is not sliced anywhere
        if all(sorted(block) == sorted(roots[0]) for block in roots[1:]):
            continue  # every block loses the same channels: counts stay equal
        g, channel = group_of_root[first]
        ids = _block_ids(roots, channel, groups[g].size)
        if ids is None or (g in seen and _partition(seen[g]) != _partition(ids)):
            groups[g].blocked = f"incompatible equal-count constraints ({why})"
            continue
        seen[g] = ids
        groups[g].blocks = torch.tensor(ids, dtype=torch.long)


def _partition(ids: list[int]) -> frozenset[frozenset[int]]:
    """Block ids up to renaming: the set of blocks as sets of channels."""
    blocks: dict[int, set[int]] = {}
    for c, b in enumerate(ids):
        blocks.setdefault(b, set()).add(c)
    return frozenset(frozenset(v) for v in blocks.values())
