"""Rank selection, pure functions: singular values (or matrices) in, ranks out.

* :func:`energy_rank`: smallest ``r`` keeping a fraction ``E`` of the squared singular values.
* :func:`ratio_rank`: a fixed fraction of the full rank.
* :func:`evbmf`: analytic empirical variational Bayesian matrix factorisation (Nakajima, Sugiyama,
  Babacan, Tomioka 2013, "Global analytic solution of fully-observed variational Bayesian matrix
  factorization", JMLR 14), the rank selector Kim et al. 2016 use for Tucker-2 ranks.
* :func:`largest_rank_within` and :func:`allocate_budget`: ranks that fit a MAC budget, per layer or
  across layers (greedy by reconstruction error per MAC saved).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def singular_values(matrix: torch.Tensor | np.ndarray) -> np.ndarray:
    """Singular values of a 2-D matrix in float64, largest first.

    Computed as square roots of the eigenvalues of the smaller Gram matrix: conv unfoldings are
    very wide (512 x 4608) and this is ~50x faster than an SVD there; the absolute error,
    about ``eps * sigma_max``, is far below anything rank selection looks at.
    """
    m = torch.as_tensor(matrix).detach().to("cpu", torch.float64)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(m.shape)}")
    if m.shape[0] > m.shape[1]:
        m = m.T
    eig = torch.linalg.eigvalsh(m @ m.T).clamp_min(0.0)
    return eig.flip(0).sqrt().numpy()


def unfold(tensor: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-``mode`` unfolding: move ``mode`` first and flatten the rest (``(I_mode, prod(rest))``).

    Example:
        >>> unfold(torch.zeros(4, 3, 2, 2), 1).shape
        torch.Size([3, 16])
    """
    return torch.movedim(tensor, mode, 0).reshape(tensor.shape[mode], -1)


def energy_rank(sigma: torch.Tensor | np.ndarray | Sequence[float], energy: float) -> int:
    """Smallest ``r`` with ``sum(sigma[:r]**2) >= energy * sum(sigma**2)``.

    Args:
        sigma: singular values (any order; they are sorted).
        energy: fraction in (0, 1] of the squared spectrum to keep.

    Example:
        >>> energy_rank([3.0, 2.0, 1.0], 0.9)  # 9+4 = 13 of 14 >= 12.6
        2
    """
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    s2 = np.sort(_as_numpy(sigma))[::-1] ** 2
    total = s2.sum()
    if total <= 0.0:
        return 1
    cum = np.cumsum(s2) / total
    # tolerance so that energy=1.0 does not demand beyond-float exactness
    return int(min(np.searchsorted(cum, energy - 1e-12) + 1, len(s2)))


def ratio_rank(full_rank: int, ratio: float) -> int:
    """``ceil(ratio * full_rank)``, at least 1.

    Example:
        >>> ratio_rank(64, 0.25)
        16
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    return max(1, min(full_rank, math.ceil(ratio * full_rank - 1e-9)))


def truncation_error(sigma: torch.Tensor | np.ndarray | Sequence[float], rank: int) -> float:
    """Eckart–Young error of the best rank-``rank`` approximation: ``sqrt(sum(sigma[rank:]**2))``."""
    s = np.sort(_as_numpy(sigma))[::-1]
    return float(np.sqrt(np.sum(s[rank:] ** 2)))


# --------------------------------------------------------------------------------------------
# EVBMF
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EVBMFResult:
    """What :func:`evbmf` found: the rank, the noise variance and the shrunk singular values."""

    rank: int
    sigma2: float
    threshold: float
    shrunk: np.ndarray


def evbmf_tau_bar(alpha: float) -> float:
    """The constant ``tau_bar(alpha)``: the unique positive zero of
    ``log(t + 1) + alpha * log(t / alpha + 1) - t`` (Nakajima et al. 2013, Theorem 13).

    ``2.5129 * sqrt(alpha)`` is the approximation often quoted; we solve exactly by bisection.

    Example:
        >>> round(evbmf_tau_bar(1.0), 3)
        2.513
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha = L/M must be in (0, 1], got {alpha}")

    def psi(t: float) -> float:
        return math.log(t + 1.0) + alpha * math.log(t / alpha + 1.0) - t

    # psi > 0 just above 0 (slope alpha... > 1 - 1) and -> -inf; the root lies in (sqrt(alpha), 3)
    lo, hi = 1e-12, 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if psi(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _evb_tau(x: np.ndarray, alpha: float) -> np.ndarray:
    b = x - (1.0 + alpha)
    return 0.5 * (b + np.sqrt(np.maximum(b * b - 4.0 * alpha, 0.0)))


def _evb_free_energy(
    sigma2: float, L: int, M: int, s: np.ndarray, residual: float, x_bar: float
) -> float:
    """2F/M up to constants, as a function of the noise variance (paper eq. for sigma2_EVB)."""
    alpha = L / M
    x = s**2 / (M * sigma2)
    big = x > x_bar
    z1, z2 = x[big], x[~big]
    t = _evb_tau(z1, alpha)
    value = np.sum(z2 - np.log(z2))
    value += np.sum(z1 - t) + np.sum(np.log((t + 1.0) / z1)) + alpha * np.sum(np.log(t / alpha + 1))
    value += residual / (M * sigma2) + (L - len(s)) * math.log(sigma2)
    return float(value)


def _minimize_scalar(fn: Callable[[float], float], lo: float, hi: float) -> float:
    """Global-ish minimum on [lo, hi]: a log-spaced grid, then golden-section refinement."""
    if hi <= lo:
        return lo
    grid = np.geomspace(lo, hi, 200)
    values = [fn(float(g)) for g in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = fn(c), fn(d)
    for _ in range(100):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = fn(d)
    best = 0.5 * (a + b)
    return best if fn(best) <= values[i] else float(grid[i])


def evbmf(matrix: torch.Tensor | np.ndarray, sigma2: float | None = None) -> EVBMFResult:
    """Analytic EVBMF of a matrix: estimated rank, noise variance and shrunk singular values.

    Implements the global analytic solution of Nakajima et al. 2013 for ``Y = B A^T + noise``:
    with ``L <= M`` the matrix sides, ``alpha = L / M`` and ``x_bar = (1 + tau_bar)(1 + alpha /
    tau_bar)``, a component survives iff its singular value exceeds ``sqrt(M * sigma2 * x_bar)``;
    the noise variance (when not given) minimises the free energy over the interval the paper
    bounds it to, and survivors are shrunk by the paper's closed form.

    Args:
        matrix: a 2-D tensor or array (transposed internally so that ``L <= M``).
        sigma2: known noise variance, or ``None`` to estimate it (empirical Bayes).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.randn(60, 5, generator=g) @ torch.randn(5, 50, generator=g)
        >>> evbmf(y + 0.1 * torch.randn(60, 50, generator=g)).rank
        5
    """
    y = _as_numpy(matrix)
    if y.ndim != 2:
        raise ValueError(f"evbmf expects a 2-D matrix, got shape {y.shape}")
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    s = singular_values(y)
    alpha = L / M
    tau_bar = evbmf_tau_bar(alpha)
    x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar)
    residual = 0.0  # all L singular values are kept, so nothing is left outside them
    if sigma2 is None:
        h_bar = min(math.ceil(L / (1.0 + alpha)) - 1, L - 1)  # paper's bound on the EVB rank
        upper = float(np.sum(s**2) + residual) / (L * M)
        tail = s[h_bar:]
        lower = max(float(s[h_bar] ** 2) / (M * x_bar), float(np.mean(tail**2)) / M)
        lower = max(min(lower, upper), upper * 1e-12, 1e-300)
        if upper <= 0.0:
            return EVBMFResult(0, 0.0, 0.0, np.zeros(0))
        sigma2 = _minimize_scalar(
            lambda v: _evb_free_energy(v, L, M, s, residual, x_bar), lower, upper
        )
    threshold = math.sqrt(M * sigma2 * x_bar)
    keep = s[s > threshold]
    q = 1.0 - (L + M) * sigma2 / keep**2
    shrunk = keep / 2.0 * (q + np.sqrt(np.maximum(q * q - 4.0 * L * M * sigma2**2 / keep**4, 0.0)))
    return EVBMFResult(len(keep), float(sigma2), threshold, shrunk)


def evbmf_rank(matrix: torch.Tensor | np.ndarray) -> int:
    """Rank chosen by :func:`evbmf` (at least 1)."""
    return max(1, evbmf(matrix).rank)


# --------------------------------------------------------------------------------------------
# Budgets
# --------------------------------------------------------------------------------------------


def largest_rank_within(
    macs_of: Callable[[int], int], max_rank: int, budget: float, min_rank: int = 1
) -> int:
    """Largest rank ``r`` in ``[min_rank, max_rank]`` with ``macs_of(r) <= budget`` (MACs grow with
    ``r``); ``min_rank`` when none fits.

    Example:
        >>> largest_rank_within(lambda r: 10 * r, 64, 255)
        25
    """
    lo, hi = min_rank, max_rank
    if macs_of(lo) > budget:
        return min_rank
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if macs_of(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def lower_hull(curve: Sequence[tuple[int, float]]) -> list[int]:
    """Indices of ``curve``'s options on its lower convex hull, from the first to the last.

    ``curve`` lists ``(cost, error)`` by decreasing cost. Options above the hull are never worth
    stopping at in a greedy walk: some mix of their neighbours on the hull is cheaper for the
    same error (the usual fix for marginal-cost allocation on non-convex curves).

    Example:
        >>> lower_hull([(100, 0.0), (90, 0.5), (50, 0.6), (0, 3.0)])
        [0, 2, 3]
    """
    hull: list[int] = []
    for k, (cost, err) in enumerate(curve):
        # keep the hull turning the right way (slopes d error / d saved cost increasing)
        while len(hull) >= 2:
            (c1, e1), (c2, e2) = curve[hull[-2]], curve[hull[-1]]
            if (e2 - e1) * (c1 - cost) >= (err - e1) * (c1 - c2):
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def allocate_budget(curves: Sequence[Sequence[tuple[int, float]]], budget: float) -> list[int]:
    """Pick one option per layer so total MACs fit ``budget``, greedily by error added per MAC.

    Each curve lists a layer's options ``(macs, error)`` from the most accurate (most MACs) to
    the cheapest; errors should be comparable across layers (e.g. relative squared errors). Start
    from every layer's first option and repeatedly move the layer whose next step along its
    :func:`lower_hull` adds the least error per MAC saved, until the total fits (or nothing is
    left to cut); the last step then stops at the most accurate option of that layer that fits.
    Walking the hull matters when a curve is not convex: a factorised layer's first option
    already costs a large error for a small saving (the rank must drop below ``in*out/(in+out)``
    to save anything), and a plain step-by-step greedy then drains a few layers completely
    instead of cutting every layer a little.

    Args:
        curves: per layer, options sorted by decreasing MACs.
        budget: total MACs allowed over these layers.

    Returns:
        The chosen option index per layer.

    Example:
        >>> allocate_budget([[(100, 0.0), (50, 0.01)], [(100, 0.0), (50, 0.5)]], 150)
        [1, 0]
    """
    hulls = []
    for curve in curves:
        # options that save nothing over an earlier one are dropped before taking the hull
        keep = [0] + [k for k in range(1, len(curve)) if curve[k][0] < curve[k - 1][0]]
        hulls.append([keep[h] for h in lower_hull([curve[k] for k in keep])])
    step = [0] * len(curves)  # position on each hull
    total = float(sum(c[0][0] for c in curves))
    last = -1
    while total > budget:
        best, best_cost = -1, math.inf
        for i, (curve, hull) in enumerate(zip(curves, hulls)):
            if step[i] + 1 >= len(hull):
                continue
            j, k = hull[step[i]], hull[step[i] + 1]
            cost = (curve[k][1] - curve[j][1]) / (curve[j][0] - curve[k][0])
            if cost < best_cost:
                best, best_cost = i, cost
        if best < 0:
            break
        j, k = hulls[best][step[best]], hulls[best][step[best] + 1]
        total -= curves[best][j][0] - curves[best][k][0]
        step[best] += 1
        last = best
    choice = [hull[s] for hull, s in zip(hulls, step)]
    if last >= 0 and total <= budget:
        # the last hull step may overshoot: stop at the first option of that stretch that fits
        prev = hulls[last][step[last] - 1]
        slack = budget - total
        for k in range(prev + 1, choice[last]):
            if curves[last][k][0] - curves[last][choice[last]][0] <= slack:
                choice[last] = k
                break
    return choice
