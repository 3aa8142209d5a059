"""Calibration observers: collect activation statistics and choose a clipping range.

Five strategies, selected by name with :func:`make_observer`:

* ``"minmax"``: the exact running min / max (per tensor or per channel);
* ``"moving_average"``: exponential moving average of per-batch min / max (torch.ao / ORT style);
* ``"percentile"``: the ``percentile``-th quantile of a running histogram (99.99 by default);
* ``"mse"``: the clipping range minimising the expected quantization MSE on the histogram;
* ``"kl"``: TensorRT's entropy calibration — the threshold minimising KL(P || Q) between the
  clipped reference histogram and its quantized version (Migacz, GTC 2017).

The histogram observers keep 2048 bins over the running range; when a batch widens the range,
the old counts are re-binned by interpolating their cumulative distribution. The search
functions at the bottom are pure (histogram in, threshold out).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .primitives import qparams_from_range, qrange

OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "kl")


class Observer:
    """Base observer: ``update(x)`` per batch, then ``range()`` / ``qparams()``.

    Args:
        bits: target bit width (the MSE and KL searches depend on it).
        symmetric: target signed symmetric codes (range searched on ``|x|``) if True.
        axis: channel axis for per-channel statistics (``None``: per tensor).
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, axis: int | None = None) -> None:
        qrange(bits, symmetric)  # validates bits
        self.bits = bits
        self.symmetric = symmetric
        self.axis = axis
        self.batches = 0

    def update(self, x: torch.Tensor) -> None:
        """Record the statistics of one batch."""
        raise NotImplementedError

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the chosen clipping range ``(lo, hi)``."""
        raise NotImplementedError

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(scale, zero_point)`` for the chosen range."""
        lo, hi = self.range()
        return qparams_from_range(lo, hi, self.bits, self.symmetric)

    def _check(self) -> None:
        if self.batches == 0:
            raise RuntimeError(
                f"{type(self).__name__} has seen no data; run calibration batches through the model"
            )

    def _batch_minmax(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().float()
        if self.axis is None:
            return x.min(), x.max()
        flat = x.transpose(0, self.axis).reshape(x.shape[self.axis], -1)
        return flat.min(dim=1).values, flat.max(dim=1).values


class MinMaxObserver(Observer):
    """Exact running minimum and maximum.

    Example:
        >>> obs = MinMaxObserver(); obs.update(torch.tensor([-1.0, 3.0])); obs.range()
        (tensor(-1.), tensor(3.))
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, axis: int | None = None) -> None:
        super().__init__(bits, symmetric, axis)
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:  # noqa: D102
        lo, hi = self._batch_minmax(x)
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = torch.minimum(self.min_val, lo)
            self.max_val = torch.maximum(self.max_val, hi)
        self.batches += 1

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        self._check()
        return self.min_val, self.max_val


class MovingAverageObserver(MinMaxObserver):
    """Exponential moving average of per-batch min / max: ``r <- r + c * (batch - r)``.

    Args:
        averaging_constant: ``c``; 0.01 as in torch.ao and ONNX Runtime.
    """

    def __init__(
        self,
        bits: int = 8,
        symmetric: bool = False,
        axis: int | None = None,
        averaging_constant: float = 0.01,
    ) -> None:
        super().__init__(bits, symmetric, axis)
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        self.c = averaging_constant

    def update(self, x: torch.Tensor) -> None:  # noqa: D102
        lo, hi = self._batch_minmax(x)
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + self.c * (lo - self.min_val)
            self.max_val = self.max_val + self.c * (hi - self.max_val)
        self.batches += 1


class HistogramObserver(Observer):
    """Running histogram over the observed range (per tensor only).

    Args:
        bins: number of histogram bins (2048 as in TensorRT).
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, bins: int = 2048) -> None:
        super().__init__(bits, symmetric, None)
        self.bins = bins
        self.hist: torch.Tensor | None = None
        self.lo = 0.0
        self.hi = 0.0
        self.zeros = 0.0

    def update(self, x: torch.Tensor) -> None:  # noqa: D102
        x = x.detach().float().flatten()
        lo, hi = float(x.min()), float(x.max())
        if self.hist is None:
            self.lo, self.hi = lo, hi if hi > lo else lo + 1e-8
            self.hist = torch.zeros(self.bins, dtype=torch.float64)
        elif lo < self.lo or hi > self.hi:
            new_lo, new_hi = min(lo, self.lo), max(hi, self.hi)
            self.hist = rebin(self.hist, self.lo, self.hi, new_lo, new_hi)
            self.lo, self.hi = new_lo, new_hi
        self.hist += torch.histc(x, self.bins, self.lo, self.hi).double()
        # exact zeros (ReLU outputs, padding) are represented exactly at any range: the searches
        # below leave them out, or a spike at 0 would dominate the KL / MSE objectives
        self.zeros += float((x == 0).sum())
        self.batches += 1

    def _folded(self) -> tuple[np.ndarray, float, bool]:
        """Histogram the search runs on: ``|x|`` for two-sided data, ``x`` for one-sided."""
        hist = self.hist.numpy().copy()
        if self.zeros:
            zero_bin = min(int((0.0 - self.lo) / (self.hi - self.lo) * self.bins), self.bins - 1)
            if self.lo <= 0.0 <= self.hi:
                hist[zero_bin] = max(hist[zero_bin] - self.zeros, 0.0)
        if self.lo >= 0:
            return rebin_np(hist, self.lo, self.hi, 0.0, self.hi), self.hi, True
        amax = max(-self.lo, self.hi)
        edges = np.linspace(0.0, amax, self.bins + 1)
        cdf = _cdf(hist, self.lo, self.hi)
        folded = np.diff(cdf(edges) - cdf(-edges))
        return np.clip(folded, 0, None), amax, False

    def _threshold_range(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo >= 0:
            return torch.tensor(max(self.lo, 0.0)), torch.tensor(t)
        if self.symmetric:
            return torch.tensor(-t), torch.tensor(t)
        return torch.tensor(max(self.lo, -t)), torch.tensor(min(self.hi, t))


class PercentileObserver(HistogramObserver):
    """Clip at the ``percentile``-th quantile (and ``100 - percentile`` for two-sided data).

    Args:
        percentile: in (50, 100]; 99.99 by default.
    """

    def __init__(
        self, bits: int = 8, symmetric: bool = False, bins: int = 2048, percentile: float = 99.99
    ) -> None:
        super().__init__(bits, symmetric, bins)
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        self._check()
        hist = self.hist.numpy()
        p = self.percentile / 100.0
        hi = hist_quantile(hist, self.lo, self.hi, p)
        lo = self.lo if self.lo >= 0 else hist_quantile(hist, self.lo, self.hi, 1.0 - p)
        if self.symmetric and self.lo < 0:
            t = max(-lo, hi)
            return torch.tensor(-t), torch.tensor(t)
        return torch.tensor(lo), torch.tensor(hi)


class MSEObserver(HistogramObserver):
    """Clipping range minimising the quantization MSE measured on the histogram."""

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        self._check()
        hist = self.hist.numpy().copy()
        if self.zeros and self.lo <= 0.0 <= self.hi:
            zero_bin = min(int(-self.lo / (self.hi - self.lo) * self.bins), self.bins - 1)
            hist[zero_bin] = max(hist[zero_bin] - self.zeros, 0.0)
        lo, hi = mse_range(hist, self.lo, self.hi, self.bits, self.symmetric)
        return torch.tensor(lo), torch.tensor(hi)


class KLObserver(HistogramObserver):
    """TensorRT entropy calibration: the threshold minimising KL(reference || quantized)."""

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        self._check()
        folded, amax, one_sided = self._folded()
        levels = _levels(self.bits, self.symmetric, one_sided)
        return self._threshold_range(kl_threshold(folded, amax, levels))


def make_observer(
    name: str,
    bits: int = 8,
    symmetric: bool = False,
    axis: int | None = None,
    percentile: float = 99.99,
) -> Observer:
    """Build an observer by name (one of :data:`OBSERVERS`).

    Args:
        name: ``"minmax"``, ``"moving_average"``, ``"percentile"``, ``"mse"`` or ``"kl"``.
        bits: target bit width.
        symmetric: target signed symmetric codes.
        axis: channel axis (only ``minmax`` and ``moving_average`` support per-channel ranges).
        percentile: used by ``"percentile"``.

    Example:
        >>> obs = make_observer("percentile", bits=8); obs.update(torch.randn(10000))
        >>> lo, hi = obs.range(); bool(3.0 < hi < 4.5)
        True
    """
    if name not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; choose one of {list(OBSERVERS)}")
    if axis is not None and name not in ("minmax", "moving_average"):
        raise ValueError(f"observer {name!r} is per-tensor only; use minmax for per-channel ranges")
    if name == "minmax":
        return MinMaxObserver(bits, symmetric, axis)
    if name == "moving_average":
        return MovingAverageObserver(bits, symmetric, axis)
    if name == "percentile":
        return PercentileObserver(bits, symmetric, percentile=percentile)
    if name == "mse":
        return MSEObserver(bits, symmetric)
    return KLObserver(bits, symmetric)


# ----------------------------------------------------------------------------- pure functions


def _levels(bits: int, symmetric: bool, one_sided: bool) -> int:
    """Number of quantization steps available on the searched half-line."""
    qmin, qmax = qrange(bits, symmetric)
    if one_sided and not symmetric:
        return qmax - qmin
    return max(qmax, 1)


def _cdf(hist: np.ndarray, lo: float, hi: float):
    edges = np.linspace(lo, hi, len(hist) + 1)
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    return lambda v: np.interp(v, edges, cum)


def rebin_np(hist: np.ndarray, lo: float, hi: float, new_lo: float, new_hi: float) -> np.ndarray:
    """Re-bin ``hist`` (uniform bins on ``[lo, hi]``) onto uniform bins on ``[new_lo, new_hi]``.

    Mass is spread uniformly inside each old bin (linear interpolation of the CDF).
    """
    new_edges = np.linspace(new_lo, new_hi, len(hist) + 1)
    return np.clip(np.diff(_cdf(hist, lo, hi)(new_edges)), 0, None)


def rebin(hist: torch.Tensor, lo: float, hi: float, new_lo: float, new_hi: float) -> torch.Tensor:
    """Torch wrapper of :func:`rebin_np`."""
    return torch.from_numpy(rebin_np(hist.numpy(), lo, hi, new_lo, new_hi))


def hist_quantile(hist: np.ndarray, lo: float, hi: float, q: float) -> float:
    """The ``q``-quantile (0..1) of a histogram with uniform bins on ``[lo, hi]``.

    Example:
        >>> round(hist_quantile(np.ones(100), 0.0, 1.0, 0.25), 6)
        0.25
    """
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    edges = np.linspace(lo, hi, len(hist) + 1)
    target = q * cum[-1]
    return float(np.interp(target, cum, edges))


def mse_range(
    hist: np.ndarray,
    lo: float,
    hi: float,
    bits: int,
    symmetric: bool,
    candidates: int = 200,
) -> tuple[float, float]:
    """Clipping range minimising the squared quantization error of a histogram's bin centres.

    Candidates are ``[max(lo, -t), min(hi, t)]`` for ``t`` evenly spaced on ``(0, max(|lo|, hi)]``;
    each is scored by actually quantizing the bin centres (rounding *and* clipping error,
    weighted by the counts), so no noise model is assumed.

    Args:
        hist: counts on uniform bins over ``[lo, hi]``.
        lo, hi: histogram range.
        bits: bit width.
        symmetric: signed symmetric codes (else unsigned affine).
        candidates: number of thresholds tried.

    Example:
        >>> lo, hi = mse_range(np.ones(1000), 0.0, 1.0, 8, False); round(hi, 2)
        1.0
    """
    centers = lo + (np.arange(len(hist)) + 0.5) * ((hi - lo) / len(hist))
    qmin, qmax = qrange(bits, symmetric)
    amax = max(abs(lo), abs(hi))
    best, best_err = (lo, hi), math.inf
    for t in np.linspace(amax / candidates, amax, candidates):
        c_lo, c_hi = max(lo, -t), min(hi, t)
        scale, zp = qparams_from_range(c_lo, c_hi, bits, symmetric)
        scale, zp = float(scale), float(zp)
        q = np.clip(np.round(centers / scale) + zp, qmin, qmax)
        err = float(np.sum(hist * (centers - (q - zp) * scale) ** 2))
        if err < best_err:
            best, best_err = (float(c_lo), float(c_hi)), err
    return best


def kl_threshold(hist: np.ndarray, amax: float, levels: int, max_candidates: int = 512) -> float:
    """TensorRT entropy calibration on a histogram of ``|x|`` (or of one-sided ``x``).

    For each candidate bin count ``i`` the reference distribution ``P`` is ``hist[:i]`` with the
    outlier mass folded into its last bin; ``Q`` merges ``hist[:i]`` into ``levels`` groups and
    spreads each group's mass evenly over its non-empty bins. Returns the threshold (upper edge of
    bin ``i``) with the smallest KL(P || Q).

    Args:
        hist: histogram on uniform bins over ``[0, amax]``.
        amax: upper edge of the histogram.
        levels: number of quantization bins (128 for signed int8, 255 for one-sided uint8).
        max_candidates: cap on the number of thresholds evaluated (evenly strided).
    """
    n = len(hist)
    hist = np.asarray(hist, dtype=np.float64)
    if levels >= n or hist.sum() == 0:
        return amax
    stride = max(1, (n - levels) // max_candidates)
    best_i, best_kl = n, math.inf
    for i in range(levels, n + 1, stride):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        ref = hist[:i]
        group = (np.arange(i) * levels) // i
        nonzero = (ref > 0).astype(np.float64)
        group_mass = np.bincount(group, weights=ref, minlength=levels)
        group_count = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero > 0, group_mass[group] / np.maximum(group_count[group], 1), 0.0)
        kl = _kl(p, q)
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i * amax / n


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    ps, qs = p.sum(), q.sum()
    if ps == 0 or qs == 0:
        return math.inf
    p = p / ps
    q = q / qs
    mask = p > 0
    # bins where P has mass but Q has none: smooth Q as TensorRT does (tiny epsilon)
    qm = np.maximum(q[mask], 1e-10)
    return float(np.sum(p[mask] * np.log(p[mask] / qm)))
