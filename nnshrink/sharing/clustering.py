"""One-dimensional k-means for weight sharing: centroid initialisation and Lloyd iterations.

Pure functions (tensor in, tensor out) used by :mod:`nnshrink.sharing.kmeans`. Written here
rather than taken from scikit-learn because the weights stay torch tensors (any device), the three
initialisations of Deep Compression (linear over [min, max], density, random) are needed
exactly, and in 1-D sorted centroids make assignment a ``searchsorted`` — far faster than a
general k-means on hundreds of thousands of values.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["InitMethod", "init_centroids", "kmeans_1d", "kmeans_objective"]

InitMethod = Literal["linear", "density", "random"]


# --------------------------------------------------------------------------------------------
# Pure 1-D k-means
# --------------------------------------------------------------------------------------------


def init_centroids(
    values: torch.Tensor, k: int, method: InitMethod = "linear", seed: int = 0
) -> torch.Tensor:
    """Initial centroids for 1-D k-means, sorted ascending (float64).

    Args:
        values: 1-D data.
        k: number of clusters.
        method: ``"linear"`` spaces the centroids evenly over ``[min, max]`` (the paper's choice: it
            keeps a few centroids on the rare large weights, which matter most); ``"density"``
            places them at the CDF quantiles ``(i + 0.5) / k``; ``"random"`` (Forgy) picks ``k``
            distinct data points with a seeded generator.
        seed: seed for ``"random"``.

    Example:
        >>> init_centroids(torch.tensor([0.0, 1.0, 3.0]), 4).tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    v = values.detach().reshape(-1).to(torch.float64).cpu()
    if v.numel() == 0:
        return torch.zeros(k, dtype=torch.float64)
    if method == "linear":
        return torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    sorted_v = torch.sort(v).values
    if method == "density":
        pos = (torch.arange(k, dtype=torch.float64) + 0.5) / k * (v.numel() - 1)
        lo = pos.floor().long()
        hi = pos.ceil().long()
        frac = pos - lo
        return sorted_v[lo] * (1 - frac) + sorted_v[hi] * frac
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        if v.numel() >= k:
            picks = torch.randperm(v.numel(), generator=gen)[:k]
        else:
            picks = torch.randint(v.numel(), (k,), generator=gen)
        return torch.sort(v[picks]).values
    raise ValueError(f"unknown init {method!r}; use 'linear', 'density' or 'random'")


def _assign_sorted(centroids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Nearest-centroid label of each value, for ascending ``centroids`` (ties go left)."""
    boundaries = (centroids[1:] + centroids[:-1]) / 2
    return torch.searchsorted(boundaries, values, right=False)


def kmeans_1d(
    values: torch.Tensor,
    k: int,
    *,
    init: InitMethod = "linear",
    iterations: int = 100,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Lloyd k-means on 1-D data; returns ``(centroids (k,), labels (n,) int64)``.

    Written in torch instead of calling scikit-learn for three reasons: no extra dependency;
    it is deterministic (no random restarts, no threading-dependent reductions: sums are float64
    prefix sums); and in 1-D Lloyd's algorithm becomes cheap and exact. Once the data are sorted,
    every cluster is a contiguous run bounded by the midpoints between neighbouring centroids, so
    one iteration costs ``O(k log n)``: ``searchsorted`` the ``k - 1`` midpoints, then take cluster
    sums from a prefix sum. This gives the same result as the textbook ``O(n k)`` assignment step.
    Centroids stay sorted, an empty cluster keeps its centroid, and the sum of squared errors never
    increases. Iteration stops early when no boundary moves.

    Args:
        values: 1-D data (any float dtype; computed in float64).
        k: number of clusters (``2**bits``).
        init: see :func:`init_centroids`.
        iterations: maximum Lloyd iterations (0 keeps the initial centroids).
        seed: seed for ``init="random"``.

    Example:
        >>> c, lab = kmeans_1d(torch.tensor([0.0, 0.1, 1.0, 1.1]), 2)
        >>> [round(x, 2) for x in c.tolist()], lab.tolist()
        ([0.05, 1.05], [0, 0, 1, 1])
    """
    v = values.detach().reshape(-1).to(torch.float64).cpu()
    centroids = init_centroids(v, k, init, seed)
    if v.numel() == 0:
        return centroids, torch.zeros(0, dtype=torch.long)
    sorted_v = torch.sort(v).values
    prefix = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(sorted_v, 0)])
    previous = None
    for _ in range(iterations):
        # Start of each cluster's run in the sorted data (cluster j holds [starts[j], ends[j])).
        inner = torch.searchsorted(sorted_v, (centroids[1:] + centroids[:-1]) / 2, right=True)
        bounds = torch.cat([torch.zeros(1, dtype=torch.long), inner, torch.tensor([v.numel()])])
        if previous is not None and torch.equal(bounds, previous):
            break
        previous = bounds
        counts = bounds[1:] - bounds[:-1]
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids, _assign_sorted(centroids, v)


def kmeans_objective(values: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> float:
    """Sum of squared distances of each value to its assigned centroid."""
    v = values.detach().reshape(-1).to(torch.float64)
    return float(((v - centroids.to(torch.float64)[labels]) ** 2).sum())
