"""Groups of coupled channel edits: prune them together, score them together.

Level 2 of structured pruning. A :class:`Group` is a set of module dimensions (conv/linear
outputs, the next layers' inputs, norm layers, residual partners, ...) that share channels
according to the :class:`~.graph.DependencyGraph`. Its channels are numbered ``0..size-1``; every
edit maps each of its positions to one group channel (a flatten→linear input maps H*W consecutive
features to the same channel). ``Group.prune(keep_idx)`` slices every edit consistently with
:mod:`.layer_ops`; ``Group.scores(criterion)`` aggregates per-channel importance over the group.

Example:
    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> groups = [g for g in build_groups(model, torch.zeros(1, 1, 8, 8)) if g.prunable]
    >>> groups[0].modules, groups[0].size
    (('0', '1', '3'), 4)
    >>> groups[0].prune([0, 3]); model[3].in_channels
    2
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .. import criteria as _criteria
from .graph import DependencyGraph
from .layer_ops import prune_in_channels, prune_out_channels

__all__ = ["Group", "GroupEdit", "build_groups"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


@dataclasses.dataclass
class GroupEdit:
    """One module dimension of a group: position p of its ``dim`` is channel ``index[p]``."""

    name: str
    module: nn.Module
    dim: str
    index: torch.Tensor


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
    """

    edits: list[GroupEdit]
    size: int
    fixed: torch.Tensor
    blocks: torch.Tensor | None = None
    blocked: str | None = None
    _done: bool = dataclasses.field(default=False, repr=False)

    @property
    def modules(self) -> tuple[str, ...]:
        """Names of the modules touched, in execution order."""
        return tuple(dict.fromkeys(e.name for e in self.edits))

    @property
    def prunable(self) -> bool:
        """Whether at least one channel could be removed."""
        return self.blocked is None and not bool(self.fixed.all()) and self.size > 1

    def scores(self, criterion: str = "l2", seed: int = 0) -> torch.Tensor:
        """Importance of each channel (float64, higher = keep), averaged over the group's layers.

        Weighted layers (conv, linear) are scored on their output dimension; ``bn_scale`` scores
        norm layers' ``|gamma|`` (groups without one fall back to ``l2``); a group without any
        weighted output (rare) is scored on the consumers' input dimension. A channel's score is
        the mean over the layers that produce it, so that in a residual group spanning several
        stages (option-A shortcuts) early channels, produced by more layers, are not favoured.

        Args:
            criterion: one of ``nnshrink.pruning.criteria.CRITERIA``.
            seed: seed for ``"random"``.
        """
        if criterion not in _criteria.CRITERIA:
            raise ValueError(f"unknown criterion {criterion!r}; choose from {_criteria.CRITERIA}")
        if criterion == "random":
            return _criteria.random(self.size, seed)
        if criterion == "bn_scale":
            scores = self._mean(criterion, lambda e: isinstance(e.module, _NORMS))
            if scores is not None:
                return scores
            criterion = "l2"
        scores = self._mean(criterion, lambda e: e.dim == "out")
        if scores is None:
            scores = self._mean(criterion, lambda e: e.dim == "in")
        return scores if scores is not None else torch.zeros(self.size, dtype=torch.float64)

    def _mean(self, criterion: str, use: Callable[[GroupEdit], bool]) -> torch.Tensor | None:
        total = torch.zeros(self.size, dtype=torch.float64)
        count = torch.zeros(self.size, dtype=torch.float64)
        for edit in self.edits:
            if not use(edit):
                continue
            s = _edit_scores(edit, criterion)
            if s is not None and s.numel() == edit.index.numel():
                total.index_add_(0, edit.index, s)
                count.index_add_(0, edit.index, torch.ones_like(s))
        if not bool((count > 0).any()):
            return None
        return total / count.clamp(min=1)

    def prune(self, keep_idx: Sequence[int] | torch.Tensor) -> None:
        """Keep only channels ``keep_idx`` in every module of the group (in place).

        Args:
            keep_idx: group channel indices to keep; must contain every fixed channel and, with
                ``blocks``, the same number per block.

        Raises:
            ValueError: on a bad ``keep_idx`` or a blocked/already pruned group (nothing edited).
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
                f"channels {missing[:8]} are fixed (inputs/outputs/ignored) and must stay"
            )
        if self.blocks is not None:
            counts = torch.bincount(self.blocks[mask], minlength=int(self.blocks.max()) + 1)
            if not bool((counts == counts[0]).all()):
                raise ValueError(
                    f"keep the same number of channels per block; got {counts.tolist()}"
                )
        self._done = True
        if bool(mask.all()):
            return
        for edit in self.edits:
            positions = torch.nonzero(mask[edit.index]).reshape(-1)
            if edit.dim == "out":
                prune_out_channels(edit.module, positions)
            else:
                prune_in_channels(edit.module, positions)

    def describe(self) -> str:
        """One line: modules and channel count."""
        return f"{self.size} channels: " + ", ".join(f"{e.name}.{e.dim}" for e in self.edits)


def _weight_axis(module: nn.Module, dim: str) -> int | None:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1 if dim == "out" else 0
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        if dim == "in" and module.groups > 1 and not depthwise:
            return None  # the weight's input axis holds in_channels / groups entries
        return 0 if dim == "out" or depthwise else 1
    if isinstance(module, nn.Linear):
        return 0 if dim == "out" else 1
    return None


def _edit_scores(edit: GroupEdit, criterion: str) -> torch.Tensor | None:
    module = edit.module
    if criterion == "bn_scale":
        weight = getattr(module, "weight", None)
        return None if weight is None else _criteria.bn_scale(weight)
    axis = _weight_axis(module, edit.dim)
    if axis is None:
        return None
    weight = module.weight
    if criterion == "taylor":
        if weight.grad is None:
            raise ValueError(
                f"criterion 'taylor' needs gradients but {edit.name}.weight.grad is None: run "
                "loss.backward() on a batch before pruning"
            )
        return _criteria.taylor(weight, weight.grad, axis)
    return getattr(_criteria, criterion)(weight, axis)


def build_groups(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignore: Callable[[str, nn.Module], bool] | None = None,
    graph: DependencyGraph | None = None,
) -> list[Group]:
    """Trace ``model`` and return its channel groups (prunable or not), in execution order.

    Args:
        model: the model (not modified).
        example_inputs: tensor or tuple of tensors for one forward pass.
        ignore: ``(name, module) -> bool``; the output channels of modules it accepts are kept.
        graph: a prebuilt :class:`DependencyGraph` (otherwise one is built with ``ignore``).

    Raises:
        UnsupportedModelError: see :class:`DependencyGraph`.
    """
    graph = graph or DependencyGraph(model, example_inputs, ignore=ignore)
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
    for edit_ids in members.values():
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
        groups.append(Group(edits, len(channel), fixed))
    _attach_blocks(graph, groups, group_of_root)
    return groups


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
    same number of groups, a chunk); anything else blocks the group: it is left unpruned.
    """
    seen: dict[int, list[int]] = {}
    for why, blocks in graph.constraints:
        roots = [[graph.find(label) for label in block] for block in blocks]
        first = next((r for block in roots for r in block if r in group_of_root), None)
        if first is None:
            continue  # the constrained tensor is not sliced anywhere
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
