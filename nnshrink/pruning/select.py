"""Channel selection: pure functions from per-channel scores to the indices to keep.

Constraints every function honours:
  * ``fixed`` channels (a bool mask) are always kept;
  * ``blocks`` (a block id per channel, all blocks the same size) must keep the same number of
    channels in each block, as grouped convolutions, ``GroupNorm`` and ``chunk`` require;
  * the kept count is a multiple of ``round_to`` (and of the number of blocks) unless the whole
    group is kept, and never zero.

Example:
    >>> select_local(torch.tensor([0.1, 0.9, 0.5, 0.3]), ratio=0.5).tolist()
    [1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["allowed_keep", "keep_count", "select_global", "select_local", "topk_keep"]


def _num_blocks(blocks: torch.Tensor | None) -> int:
    return 1 if blocks is None or blocks.numel() == 0 else int(blocks.max()) + 1


def _min_keep(n: int, fixed: torch.Tensor | None, blocks: torch.Tensor | None) -> int:
    """Smallest kept count that holds every fixed channel (per block when blocked)."""
    nb = _num_blocks(blocks)
    if fixed is None or not bool(fixed.any()):
        return nb
    if blocks is None or nb == 1:
        return int(fixed.sum())
    per_block = torch.bincount(blocks[fixed], minlength=nb).max()
    return max(1, int(per_block)) * nb


def allowed_keep(n: int, round_to: int = 1, n_blocks: int = 1) -> list[int]:
    """Kept counts allowed for ``n`` channels: multiples of lcm(round_to, n_blocks), or n.

    Example:
        >>> allowed_keep(20, round_to=8)
        [8, 16, 20]
    """
    if n < 1:
        raise ValueError(f"a group needs at least one channel, got {n}")
    step = math.lcm(max(1, round_to), max(1, n_blocks))
    values = list(range(step, n + 1, step))
    if not values or values[-1] != n:
        values.append(n)
    return values


def keep_count(
    n: int,
    target_keep: float,
    *,
    round_to: int = 1,
    fixed: torch.Tensor | None = None,
    blocks: torch.Tensor | None = None,
) -> int:
    """Round a desired kept count to the nearest allowed one (ties keep more), >= the minimum.

    Args:
        n: channels in the group.
        target_keep: desired number of channels to keep (may be fractional).
        round_to: kept count multiple (e.g. 8 for tensor cores); the group may also stay whole.
        fixed: bool mask of channels that must be kept.
        blocks: block id per channel (equal-count constraint).

    Example:
        >>> keep_count(16, 7.0, round_to=8)
        8
    """
    lower = _min_keep(n, fixed, blocks)
    candidates = [k for k in allowed_keep(n, round_to, _num_blocks(blocks)) if k >= lower]
    return min(candidates, key=lambda k: (abs(k - target_keep), -k))


def topk_keep(
    scores: torch.Tensor,
    n_keep: int,
    fixed: torch.Tensor | None = None,
    blocks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sorted indices of the ``n_keep`` best channels, fixed ones first, equal count per block.

    Example:
        >>> blocks = torch.tensor([0, 0, 1, 1])
        >>> topk_keep(torch.tensor([4.0, 1.0, 3.0, 2.0]), 2, blocks=blocks).tolist()
        [0, 2]
    """
    scores = scores.detach().to(torch.float64).reshape(-1)
    n = scores.numel()
    if not 1 <= n_keep <= n:
        raise ValueError(f"n_keep must be in [1, {n}], got {n_keep}")
    # fixed channels get +inf so that they always rank first
    ranked = scores.clone()
    if fixed is not None:
        ranked[fixed] = math.inf
    nb = _num_blocks(blocks)
    if blocks is None or nb == 1:
        order = torch.sort(ranked, descending=True, stable=True).indices
        keep = order[:n_keep]
        if fixed is not None and int(fixed.sum()) > n_keep:
            raise ValueError(f"{int(fixed.sum())} fixed channels do not fit in n_keep={n_keep}")
        return torch.sort(keep).values
    if n_keep % nb:
        raise ValueError(f"n_keep={n_keep} is not a multiple of the {nb} blocks")
    per_block = n_keep // nb
    kept = []
    for b in range(nb):
        members = torch.nonzero(blocks == b).reshape(-1)
        if per_block > members.numel():
            raise ValueError(f"block {b} has {members.numel()} channels < {per_block} to keep")
        if fixed is not None and int(fixed[members].sum()) > per_block:
            raise ValueError(f"block {b} has more fixed channels than the {per_block} kept")
        order = torch.sort(ranked[members], descending=True, stable=True).indices
        kept.append(members[order[:per_block]])
    return torch.sort(torch.cat(kept)).values


def select_local(
    scores: torch.Tensor,
    ratio: float,
    *,
    round_to: int = 1,
    fixed: torch.Tensor | None = None,
    blocks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Remove the fraction ``ratio`` of the group's channels with the lowest scores.

    Args:
        scores: one score per channel (higher = keep).
        ratio: fraction of channels to remove, in [0, 1).
        round_to: kept count multiple; fixed/blocks: see module docstring.

    Returns:
        Sorted LongTensor of kept channel indices.

    Example:
        >>> select_local(torch.arange(16.0), 0.6, round_to=4).tolist()
        [8, 9, 10, 11, 12, 13, 14, 15]
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    n = scores.numel()
    n_keep = keep_count(n, n * (1.0 - ratio), round_to=round_to, fixed=fixed, blocks=blocks)
    return topk_keep(scores, n_keep, fixed, blocks)


def select_global(
    scores: Sequence[torch.Tensor],
    ratio: float,
    *,
    round_to: int = 1,
    fixed: Sequence[torch.Tensor | None] | None = None,
    blocks: Sequence[torch.Tensor | None] | None = None,
    normalize: bool = True,
) -> list[torch.Tensor]:
    """Rank channels of all groups together and remove the fraction ``ratio`` of all channels.

    Scores of different layers live on different scales, so by default each group's scores are
    divided by their mean before ranking (as Torch-Pruning does). Each group then keeps its
    survivors, rounded to the allowed counts (so the overall ratio is approximate).

    Args:
        scores: one score vector per group.
        ratio: fraction of all channels to remove, in [0, 1).
        round_to, fixed, blocks: per-group constraints as in :func:`select_local`.
        normalize: divide each group's scores by their mean first.

    Returns:
        One sorted LongTensor of kept indices per group.

    Example:
        >>> scores = [torch.tensor([1.0, 1.0]), torch.tensor([1.0, 9.0])]
        >>> [k.tolist() for k in select_global(scores, 0.25)]
        [[0, 1], [1]]
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}")
    k = len(scores)
    fixed = list(fixed) if fixed is not None else [None] * k
    blocks = list(blocks) if blocks is not None else [None] * k
    normed, owners = [], []
    for g, s in enumerate(scores):
        s = s.detach().to(torch.float64).reshape(-1)
        if normalize:
            s = s / (s.mean().abs() + 1e-12)
        if fixed[g] is not None:
            s = s.masked_fill(fixed[g], math.inf)
        normed.append(s)
        owners.append(torch.full_like(s, g, dtype=torch.long))
    if not normed:
        return []
    flat, owner = torch.cat(normed), torch.cat(owners)
    total = flat.numel()
    n_remove = min(int(round(ratio * total)), int(torch.isfinite(flat).sum()))
    order = torch.sort(flat, stable=True).indices[:n_remove]
    removed = torch.bincount(owner[order], minlength=k)
    kept = []
    for g, s in enumerate(scores):
        n = s.numel()
        n_keep = keep_count(
            n, n - int(removed[g]), round_to=round_to, fixed=fixed[g], blocks=blocks[g]
        )
        kept.append(topk_keep(s, n_keep, fixed[g], blocks[g]))
    return kept
