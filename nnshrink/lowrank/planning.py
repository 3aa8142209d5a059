"""Rank planning for low-rank decomposition: per-layer cost models, rank rules, budget curves.

A :class:`LayerPlan` ties one layer to its method and to ``macs_of(ranks)`` (from the real
feature-map sizes) and ``params_of(ranks)``. :func:`select_ranks` applies the per-layer rules of
:class:`LowRank` (energy, ratio, EVBMF, MAC or parameter ratio, rounding) and
:func:`budget_curve` lists the (cost, error) options that the whole-model budget allocates
over, the cost being MACs or parameters (``LayerPlan.cost``). Everything here reads weights and
shapes only; :mod:`nnshrink.lowrank.decompose` builds the replacement modules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from . import rank as R
from .cp import cp_macs, cp_params
from .svd import svd_macs, svd_params
from .tucker import tucker2_macs, tucker2_params

if TYPE_CHECKING:
    from .decompose import LowRank


@dataclasses.dataclass
class LayerPlan:
    """One layer to decompose: its method, and its MACs and parameters as functions of the ranks.

    Args:
        name: the qualified module name.
        module: the ``nn.Linear`` (svd) or ``nn.Conv2d`` (cp, tucker).
        method: ``"svd"``, ``"cp"`` or ``"tucker"``.
        macs_before: the dense layer's MACs on the example batch.
        macs_of: MACs of the factorised layer for a ranks tuple (``(r,)`` for svd/cp,
            ``(r_out, r_in)`` for tucker).
        params_before: the dense layer's parameters (weight and bias).
        params_of: parameters of the factorised layer for a ranks tuple.
        cost: what the ``"macs"``/``"params"`` and ``"budget"`` rules limit: ``cost_before``
            and ``cost_of`` are the MACs or the parameters.
        ranks: the chosen ranks (filled in by the handler).
        note: why the layer is kept dense, if it is.
        whitened: for activation-aware SVD, the matrix ``W T`` whose spectrum the rank rules
            and error estimates read instead of ``W``'s (see :mod:`nnshrink.lowrank.whitening`).

    Example:
        >>> plan = plan_layer("fc", nn.Linear(64, 32), "svd", ((1, 64), (1, 32)))
        >>> plan.macs_before, plan.macs_of((8,)), plan.params_before, plan.params_of((8,))
        (2048, 768, 2080, 800)
    """

    name: str
    module: nn.Module
    method: str
    macs_before: int
    macs_of: Callable[[tuple[int, ...]], int]
    params_before: int
    params_of: Callable[[tuple[int, ...]], int]
    cost: Literal["macs", "params"] = "macs"
    ranks: tuple[int, ...] = ()
    note: str = ""
    whitened: torch.Tensor | None = None

    @property
    def cost_before(self) -> int:
        """The dense layer's MACs or parameters, as ``cost`` says."""
        return self.params_before if self.cost == "params" else self.macs_before

    def cost_of(self, ranks: tuple[int, ...]) -> int:
        """The factorised layer's MACs or parameters at ``ranks``, as ``cost`` says."""
        return self.params_of(ranks) if self.cost == "params" else self.macs_of(ranks)


def plan_layer(
    name: str,
    module: nn.Module,
    method: str,
    shapes: tuple,
    fuse_spatial: bool = False,
    cost: Literal["macs", "params"] = "macs",
) -> LayerPlan:
    """The :class:`LayerPlan` of one layer, its MACs counted on the shapes it was called with.

    Args:
        name: the qualified module name.
        module: the layer.
        method: ``"svd"``, ``"cp"`` or ``"tucker"``.
        shapes: ``(input shape, output shape)`` of the layer's first call.
        fuse_spatial: count CP with one fused kh x kw depthwise conv (``cp_fuse_spatial``).
        cost: what the rank rules limit, ``"macs"`` or ``"params"`` (see :class:`LayerPlan`).

    Example:
        >>> conv = nn.Conv2d(16, 16, 3, padding=1)
        >>> plan = plan_layer("c", conv, "tucker", ((1, 16, 8, 8), (1, 16, 8, 8)))
        >>> plan.macs_before
        147456
    """
    in_shape, out_shape = shapes
    params = sum(p.numel() for p in module.parameters())
    bias = getattr(module, "bias", None) is not None
    if method == "svd":
        tokens = math.prod(in_shape) // module.in_features
        before = tokens * module.in_features * module.out_features

        def macs_of(ranks):
            return svd_macs(module.in_features, module.out_features, ranks[0], tokens)

        def params_of(ranks):
            return svd_params(module.in_features, module.out_features, ranks[0], bias)

        return LayerPlan(name, module, method, before, macs_of, params, params_of, cost)
    batch = out_shape[0]
    in_hw, out_hw = tuple(in_shape[-2:]), tuple(out_shape[-2:])
    kh, kw = module.kernel_size
    before = batch * out_hw[0] * out_hw[1] * module.in_channels * module.out_channels * kh * kw
    if method == "cp":

        def macs_of(ranks):
            return batch * cp_macs(module, ranks[0], in_hw, out_hw, fuse_spatial=fuse_spatial)

        def params_of(ranks):
            return cp_params(module, ranks[0], fuse_spatial=fuse_spatial)

    else:

        def macs_of(ranks):
            return batch * tucker2_macs(module, ranks, in_hw, out_hw)

        def params_of(ranks):
            return tucker2_params(module, ranks)

    return LayerPlan(name, module, method, before, macs_of, params, params_of, cost)


def _tucker_ranks(c_out: int, c_in: int, t: int, steps: int) -> tuple[int, int]:
    """Ranks proportional to the channel counts, step ``t`` of ``steps``."""
    return max(1, math.ceil(t * c_out / steps)), max(1, math.ceil(t * c_in / steps))


def _discarded_energy(plan: LayerPlan) -> Callable[[int, int], float]:
    """``tail(mode, r)``: the fraction of the weight's squared norm beyond rank ``r`` in the
    spectrum of unfolding ``mode`` (the matrix itself for SVD)."""
    tails = [(s**2)[::-1].cumsum()[::-1] for s in _spectra(plan)]
    total = float(tails[0][0]) or 1.0

    def tail(mode: int, r: int) -> float:
        return float(tails[mode][r]) / total if r < len(tails[mode]) else 0.0

    return tail


def tucker_options(plan: LayerPlan, round_to: int = 1) -> list[tuple[int, float, tuple[int, int]]]:
    """``(cost, estimated relative squared error, ranks)`` of the Tucker-2 shapes worth trying.

    Three families, ranks rounded to multiples of ``round_to``: both channel modes cut in
    proportion (three convs), or one mode kept whole and its factor folded into the core (two
    convs: ``1x1 → core`` or ``core → 1x1``). The error is the HOSVD bound, the sum of the cut
    modes' discarded energies; with one mode whole it is exact (Eckart–Young on the other
    unfolding). Options that cost at least the dense layer (MACs or parameters, as ``plan.cost``
    says) are dropped.

    Args:
        plan: a ``"tucker"`` plan.
        round_to: ranks in multiples of this (capped at the channel counts).

    Example:
        >>> conv = nn.Conv2d(32, 32, 3, padding=1)
        >>> plan = plan_layer("c", conv, "tucker", ((1, 32, 8, 8), (1, 32, 8, 8)))
        >>> all(cost < plan.cost_before for cost, _, _ in tucker_options(plan, round_to=16))
        True
    """
    c_out, c_in = plan.module.weight.shape[:2]
    tail = _discarded_energy(plan)
    steps = max(c_out, c_in)
    shapes = {_tucker_ranks(c_out, c_in, t, steps) for t in range(1, steps + 1)}
    shapes |= {(c_out, r) for r in range(1, c_in + 1)} | {(r, c_in) for r in range(1, c_out + 1)}
    options = []
    for ranks in {_round_ranks(plan, shape, round_to) for shape in shapes}:
        cost = plan.cost_of(ranks)
        if cost < plan.cost_before:
            options.append((cost, tail(0, ranks[0]) + tail(1, ranks[1]), ranks))
    return sorted(options)


def _spectra(plan: LayerPlan) -> list:
    w = plan.module.weight.detach()
    if plan.method == "svd":
        # activation-aware SVD truncates W T: its spectrum gives the (output) error
        return [R.singular_values(w if plan.whitened is None else plan.whitened)]
    return [R.singular_values(R.unfold(w, 0)), R.singular_values(R.unfold(w, 1))]


def _cp_full_rank(conv: nn.Conv2d) -> int:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    c_out, c_in = conv.out_channels, conv.in_channels
    return max(min(c_out, c_in * k), min(c_in, c_out * k))


def _cp_rank_cap(plan: LayerPlan) -> int:
    """A CP rank at which the factorisation costs at least as much as the dense layer."""
    per_rank = max(1, plan.cost_of((1,)))
    return max(1, plan.cost_before // per_rank + 1)


def _mode_sizes(plan: LayerPlan) -> tuple[int, ...]:
    """The largest useful rank per factor: min(shape) for SVD, the channel counts for Tucker,
    the CP rank at which the factorisation stops saving cost for CP."""
    if plan.method == "svd":
        return (min(plan.module.weight.shape),)
    if plan.method == "cp":
        return (_cp_rank_cap(plan),)
    return tuple(plan.module.weight.shape[:2])


def _round_ranks(plan: LayerPlan, ranks: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """Each rank rounded up to a multiple of ``multiple``, capped at its mode's size."""
    if multiple == 1:
        return tuple(ranks)
    return tuple(
        min(cap, multiple * math.ceil(r / multiple)) for r, cap in zip(ranks, _mode_sizes(plan))
    )


def select_ranks(plan: LayerPlan, config: LowRank) -> tuple[int, ...]:
    """Ranks for one layer under the per-layer rules of ``config`` (all but ``budget``).

    Ranks are rounded up to ``config.round_to``, and a MAC target (``rank="macs"``) is searched
    with the rounded ranks, so rounding cannot push a layer over its target.

    Args:
        plan: the layer's plan.
        config: the :class:`~nnshrink.lowrank.decompose.LowRank` config.

    Example:
        >>> from nnshrink.lowrank import LowRank
        >>> plan = plan_layer("fc", nn.Linear(64, 32), "svd", ((1, 64), (1, 32)))
        >>> select_ranks(plan, LowRank(method="svd", rank="ratio", ratio=0.25))
        (8,)
    """
    m = config.round_to
    return _round_ranks(plan, _select_raw(plan, config, lambda r: _round_ranks(plan, r, m)), m)


def _select_raw(
    plan: LayerPlan, config: LowRank, rounded: Callable[[tuple[int, ...]], tuple[int, ...]]
) -> tuple[int, ...]:
    w = plan.module.weight.detach()
    rule = config.rank
    if plan.method == "svd":
        full = min(w.shape)
        if rule == "energy":
            return (R.energy_rank(_spectra(plan)[0], config.energy),)
        if rule == "ratio":
            return (R.ratio_rank(full, config.ratio),)
        if rule == "evbmf":
            return (R.evbmf_rank(w),)
        target = config.cost_ratio * plan.cost_before
        return (R.largest_rank_within(lambda r: plan.cost_of(rounded((r,))), full, target),)
    c_out, c_in = w.shape[:2]
    if rule in ("energy", "evbmf"):
        if rule == "energy":
            r_out, r_in = (R.energy_rank(s, config.energy) for s in _spectra(plan))
        else:
            r_out, r_in = R.evbmf_rank(R.unfold(w, 0)), R.evbmf_rank(R.unfold(w, 1))
        return (max(r_out, r_in),) if plan.method == "cp" else (r_out, r_in)
    if plan.method == "cp":
        if rule == "ratio":
            return (R.ratio_rank(_cp_full_rank(plan.module), config.ratio),)
        target = config.cost_ratio * plan.cost_before
        cap = _cp_rank_cap(plan)
        return (R.largest_rank_within(lambda r: plan.cost_of(rounded((r,))), cap, target),)
    if rule == "ratio":
        return (R.ratio_rank(c_out, config.ratio), R.ratio_rank(c_in, config.ratio))
    options = tucker_options(plan, config.round_to)
    if not options:  # nothing saves cost (e.g. rounding caps every rank at full size)
        return (c_out, c_in)
    target = config.cost_ratio * plan.cost_before
    within = [o for o in options if o[0] <= target]
    # the lowest error bound that fits; when nothing fits, the cheapest option
    return min(within, key=lambda o: (o[1], o[0]))[2] if within else options[0][2]


def budget_curve(
    plan: LayerPlan, round_to: int = 1
) -> tuple[list[tuple[int, float]], list[tuple[int, ...]]]:
    """The (cost, error) options of one layer, dense first, for the whole-model budget.

    Returns the options ``(cost, estimated relative squared error)`` from dense to rank 1 and
    their ranks (rounded up to multiples of ``round_to``; repeated options are dropped), as
    :func:`nnshrink.lowrank.rank.allocate_budget` takes them.

    Error estimates: SVD exact (Eckart–Young); Tucker the HOSVD bound (see
    :func:`tucker_options`; only its Pareto front is offered, so errors grow as the cost falls);
    CP the larger mode's discarded energy (a lower bound: a CP model of rank R has unfoldings
    of rank at most R).

    Args:
        plan: the layer's plan.
        round_to: ranks in multiples of this.

    Example:
        >>> plan = plan_layer("fc", nn.Linear(8, 8), "svd", ((1, 8), (1, 8)))
        >>> options, ranks = budget_curve(plan)
        >>> options[0][1], ranks[0]
        (0.0, ())
    """
    tail = _discarded_energy(plan)
    options: list[tuple[int, float]] = [(plan.cost_before, 0.0)]
    ranks: list[tuple[int, ...]] = [()]
    if plan.method == "tucker":
        # the Pareto front: walking up from the cheapest, keep what beats every cheaper error
        front, best = [], math.inf
        for cost, err, cand in tucker_options(plan, round_to):
            if err < best:
                front.append((cost, err, cand))
                best = err
        for cost, err, cand in reversed(front):
            options.append((cost, err))
            ranks.append(cand)
        return options, ranks
    if plan.method == "cp":
        cap = min(_cp_rank_cap(plan), 4 * _cp_full_rank(plan.module))
        candidates = [(r,) for r in range(cap, 0, -1)]
    else:
        candidates = [(r,) for r in range(min(plan.module.weight.shape), 0, -1)]
    for cand in candidates:
        cand = _round_ranks(plan, cand, round_to)
        if plan.method == "cp":
            err = max(tail(0, cand[0]), tail(1, cand[0]))
        else:
            err = tail(0, cand[0])
        cost = plan.cost_of(cand)
        if cost < options[-1][0]:
            options.append((cost, err))
            ranks.append(cand)
    return options, ranks
