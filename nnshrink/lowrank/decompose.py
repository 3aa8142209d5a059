"""Whole-model low-rank decomposition: the ``LowRank`` config and its ``compress_`` handler.

Each chosen layer is replaced by an ``nn.Sequential`` of standard layers (so checkpoints rebuild
it and ONNX exports it): Linear by truncated SVD, Conv2d by CP or Tucker-2. Ranks come from one of
the pure selectors in :mod:`nnshrink.lowrank.rank`. Layers whose decomposition would not reduce
MACs, grouped/depthwise convs and 1x1 convs (for CP/Tucker) are left alone and reported as skipped.
Fine-tuning afterwards is the caller's job (e.g. ``nnshrink.train.fit``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import (
    Config,
    ConfigError,
    forward_with_hooks,
    register_handler,
    set_submodule,
)
from . import rank as R
from ._conv import unsupported_conv_reason
from .cp import cp_conv, cp_factors, cp_macs, cp_params, cp_reconstruct
from .svd import svd_linear, svd_macs, svd_params
from .tucker import tucker2_conv, tucker2_factors, tucker2_macs, tucker2_params, tucker2_reconstruct


@dataclasses.dataclass(frozen=True)
class LowRank(Config):
    """Replace layers by low-rank factorisations.

    Args:
        method: ``"svd"`` (Linear layers), ``"cp"`` or ``"tucker"`` (Conv2d; Linear too with
            ``linear=True``).
        rank: how ranks are chosen: ``"energy"`` (keep ``energy`` of the squared singular
            values; for Tucker per channel mode; for CP the larger of the two mode ranks, as a CP
            rank is at least every unfolding's rank), ``"ratio"`` (``ratio`` of the full rank),
            ``"macs"`` (largest rank with at most ``macs_ratio`` of each layer's MACs; for
            Tucker the shape with the lowest HOSVD error bound among both modes cut in
            proportion or one mode kept whole, its factor folded into the core),
            ``"evbmf"`` (analytic EVBMF, per channel mode for Tucker/CP) or ``"budget"``
            (``macs_ratio`` of the MACs of all candidate layers together, allocated greedily by
            estimated reconstruction error per MAC saved).
        energy: kept fraction of the squared spectrum for ``rank="energy"``.
        ratio: fraction of the full rank for ``rank="ratio"``.
        macs_ratio: fraction of MACs kept, per layer (``"macs"``) or overall (``"budget"``).
        linear: with ``cp``/``tucker``, also decompose Linear layers by SVD.
        layers: decompose exactly these submodules (dotted names); an unsupported one is an error.
        tucker_method: ``"hosvd"`` (closed form) or ``"hooi"`` (tensorly ``partial_tucker``).
        n_iter_max: ALS / HOOI iterations.
        seed: random state for tensorly.
        round_to: make every rank a multiple of this (rounded up, capped at the full size of
            its mode; MAC targets are met with the rounded ranks). ONNX Runtime's blocked
            (NCHWc) conv kernels take channel counts in multiples of 8 (AVX2) or 16 (AVX-512);
            odd ranks fall back to slower kernels plus layout reorders around them.
        cp_fuse_spatial: build CP layers as three convs, ``1x1 → kh x kw depthwise → 1x1``,
            the two 1-D depthwise convs merged into one (exact; see
            :func:`~nnshrink.lowrank.cp.cp_conv`). Faster on CPUs, where CP's extra passes
            over its ``R`` activation channels dominate; MACs are counted for this layout.

    Example:
        >>> import nnshrink as ns  # doctest: +SKIP
        >>> ns.compress_(model, LowRank(method="tucker", rank="macs", macs_ratio=0.5),
        ...              example_inputs=torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    """

    kind: ClassVar[str] = "low-rank"
    method: Literal["svd", "cp", "tucker"] = "tucker"
    rank: Literal["energy", "ratio", "macs", "evbmf", "budget"] = "energy"
    energy: float = 0.9
    ratio: float = 0.5
    macs_ratio: float = 0.5
    linear: bool = False
    layers: tuple[str, ...] = ()
    tucker_method: Literal["hosvd", "hooi"] = "hosvd"
    n_iter_max: int = 50
    seed: int = 0
    round_to: int = 1
    cp_fuse_spatial: bool = False

    def validate(self) -> None:
        if self.round_to < 1:
            raise ConfigError(f"low-rank.round_to must be >= 1, got {self.round_to}")
        if self.cp_fuse_spatial and self.method != "cp":
            raise ConfigError(
                f"low-rank.cp_fuse_spatial applies to method='cp' only (got method="
                f"{self.method!r}); drop it or set method: cp"
            )
        for field in ("energy", "ratio", "macs_ratio"):
            value = getattr(self, field)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"low-rank.{field} must be in (0, 1], got {value}")
        if self.n_iter_max < 1:
            raise ConfigError(f"low-rank.n_iter_max must be >= 1, got {self.n_iter_max}")


@dataclasses.dataclass
class LayerDecomposition:
    """One row of the report; ``note`` says why a layer was skipped (empty when decomposed)."""

    name: str
    method: str
    ranks: tuple[int, ...]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    rel_error: float | None
    note: str = ""

    @property
    def decomposed(self) -> bool:
        return not self.note


@dataclasses.dataclass
class LowRankReport:
    """Per-layer rows returned by the ``LowRank`` handler."""

    rows: list[LayerDecomposition]

    @property
    def decomposed(self) -> list[LayerDecomposition]:
        return [r for r in self.rows if r.decomposed]

    @property
    def skipped(self) -> list[LayerDecomposition]:
        return [r for r in self.rows if not r.decomposed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able rows plus MAC/param totals over the decomposed layers."""
        done = self.decomposed
        return {
            "layers": [dataclasses.asdict(r) | {"ranks": list(r.ranks)} for r in self.rows],
            "macs_before": sum(r.macs_before for r in done),
            "macs_after": sum(r.macs_after for r in done),
            "params_before": sum(r.params_before for r in done),
            "params_after": sum(r.params_after for r in done),
        }

    def to_markdown(self) -> str:
        """A markdown table, one line per layer."""
        lines = [
            "| layer | method | ranks | MACs before | MACs after | params before | params after "
            "| rel. error | note |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.rows:
            err = "" if r.rel_error is None else f"{r.rel_error:.4f}"
            lines.append(
                f"| {r.name} | {r.method} | {'x'.join(map(str, r.ranks))} | {r.macs_before:,} | "
                f"{r.macs_after:,} | {r.params_before:,} | {r.params_after:,} | {err} | {r.note} |"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Planning: which layers, what shapes, which ranks
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Plan:
    name: str
    module: nn.Module
    method: str
    macs_before: int
    macs_of: Callable[[tuple[int, ...]], int]
    ranks: tuple[int, ...] = ()
    note: str = ""


def _targets(
    model: nn.Module, config: LowRank, filter_fn: Callable[[nn.Module, str], bool] | None
) -> tuple[list[tuple[str, nn.Module, str]], list[LayerDecomposition]]:
    """(name, module, method) to decompose, plus rows for layers left alone on purpose."""
    wants_conv = config.method in ("cp", "tucker")
    wants_linear = config.method == "svd" or config.linear
    chosen, skipped = [], []
    if config.layers:
        modules = dict(model.named_modules())
        for name in config.layers:
            if name not in modules:
                raise ConfigError(f"low-rank.layers: {name!r} is not a submodule of the model")
            module = modules[name]
            if isinstance(module, nn.Linear):
                if not wants_linear:
                    raise ConfigError(
                        f"low-rank.layers: {name!r} is nn.Linear; decompose it with "
                        "method='svd' or set linear=True"
                    )
            elif isinstance(module, nn.Conv2d):
                if not wants_conv:
                    raise ConfigError(
                        f"low-rank.layers: {name!r} is a Conv2d; method='svd' decomposes nn.Linear "
                        "only, use method='tucker' or 'cp'"
                    )
                reason = factorisable_conv_reason(module)
                if reason:
                    raise ConfigError(f"low-rank.layers: {name!r}: {reason}")
            else:
                raise ConfigError(
                    f"low-rank.layers: {name!r} is {type(module).__name__}; supported: nn.Linear "
                    "(svd) and nn.Conv2d with groups=1 and a kernel larger than 1x1 (cp, tucker)"
                )
        candidates = [(n, modules[n]) for n in config.layers]
    else:
        candidates = [
            (n, m)
            for n, m in model.named_modules()
            if isinstance(m, nn.Linear | nn.Conv2d) and (filter_fn is None or filter_fn(m, n))
        ]
    for name, module in candidates:
        if isinstance(module, nn.Linear):
            if wants_linear:
                chosen.append((name, module, "svd"))
            continue
        if not wants_conv:
            continue
        reason = factorisable_conv_reason(module)
        if reason:
            p = sum(t.numel() for t in module.parameters())
            skipped.append(LayerDecomposition(name, config.method, (), 0, 0, p, p, None, reason))
        else:
            chosen.append((name, module, config.method))
    return chosen, skipped


def factorisable_conv_reason(conv: nn.Conv2d) -> str | None:
    """Why CP/Tucker cannot factor ``conv`` (grouped, unsupported options, or 1x1), or ``None``.

    Args:
        conv: the convolution to check.

    Example:
        >>> factorisable_conv_reason(nn.Conv2d(8, 8, 3)) is None
        True
        >>> factorisable_conv_reason(nn.Conv2d(8, 8, 1))
        '1x1 conv has no spatial mode to factor (CP/Tucker); it is a matrix: use svd'
    """
    reason = unsupported_conv_reason(conv)
    if reason is None and tuple(conv.kernel_size) == (1, 1):
        return "1x1 conv has no spatial mode to factor (CP/Tucker); it is a matrix: use svd"
    return reason


@torch.no_grad()
def _shapes(model: nn.Module, modules: list[nn.Module], example_inputs: Any) -> dict[int, tuple]:
    """(input shape, output shape) of each module's first call on ``example_inputs``."""
    seen: dict[int, tuple] = {}

    def hook(mod, inputs, output):
        seen.setdefault(id(mod), (tuple(inputs[0].shape), tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in modules]
    forward_with_hooks(model, example_inputs, handles)
    return seen


def _plan(
    name: str, module: nn.Module, method: str, shapes: tuple, fuse_spatial: bool = False
) -> _Plan:
    in_shape, out_shape = shapes
    if method == "svd":
        tokens = math.prod(in_shape) // module.in_features
        before = tokens * module.in_features * module.out_features

        def macs_of(ranks):
            return svd_macs(module.in_features, module.out_features, ranks[0], tokens)

        return _Plan(name, module, method, before, macs_of)
    batch = out_shape[0]
    in_hw, out_hw = tuple(in_shape[-2:]), tuple(out_shape[-2:])
    kh, kw = module.kernel_size
    before = batch * out_hw[0] * out_hw[1] * module.in_channels * module.out_channels * kh * kw
    if method == "cp":

        def macs_of(ranks):
            return batch * cp_macs(module, ranks[0], in_hw, out_hw, fuse_spatial=fuse_spatial)

    else:

        def macs_of(ranks):
            return batch * tucker2_macs(module, ranks, in_hw, out_hw)

    return _Plan(name, module, method, before, macs_of)


def _tucker_ranks(c_out: int, c_in: int, t: int, steps: int) -> tuple[int, int]:
    """Ranks proportional to the channel counts, step ``t`` of ``steps``."""
    return max(1, math.ceil(t * c_out / steps)), max(1, math.ceil(t * c_in / steps))


def _discarded_energy(plan: _Plan) -> Callable[[int, int], float]:
    """``tail(mode, r)``: the fraction of the weight's squared norm beyond rank ``r`` in the
    spectrum of unfolding ``mode`` (the matrix itself for SVD)."""
    tails = [(s**2)[::-1].cumsum()[::-1] for s in _spectra(plan)]
    total = float(tails[0][0]) or 1.0

    def tail(mode: int, r: int) -> float:
        return float(tails[mode][r]) / total if r < len(tails[mode]) else 0.0

    return tail


def _tucker_options(plan: _Plan, round_to: int = 1) -> list[tuple[int, float, tuple[int, int]]]:
    """``(macs, estimated relative squared error, ranks)`` of the Tucker-2 shapes worth trying.

    Three families, ranks rounded to multiples of ``round_to``: both channel modes cut in
    proportion (three convs), or one mode kept whole and its factor folded into the core (two
    convs: ``1x1 → core`` or ``core → 1x1``). The error is the HOSVD bound, the sum of the cut
    modes' discarded energies; with one mode whole it is exact (Eckart–Young on the other
    unfolding). Options that cost at least the dense MACs are dropped.
    """
    c_out, c_in = plan.module.weight.shape[:2]
    tail = _discarded_energy(plan)
    steps = max(c_out, c_in)
    shapes = {_tucker_ranks(c_out, c_in, t, steps) for t in range(1, steps + 1)}
    shapes |= {(c_out, r) for r in range(1, c_in + 1)} | {(r, c_in) for r in range(1, c_out + 1)}
    options = []
    for ranks in {_round_ranks(plan, shape, round_to) for shape in shapes}:
        macs = plan.macs_of(ranks)
        if macs < plan.macs_before:
            options.append((macs, tail(0, ranks[0]) + tail(1, ranks[1]), ranks))
    return sorted(options)


def _spectra(plan: _Plan) -> list:
    w = plan.module.weight.detach()
    if plan.method == "svd":
        return [R.singular_values(w)]
    return [R.singular_values(R.unfold(w, 0)), R.singular_values(R.unfold(w, 1))]


def _cp_full_rank(conv: nn.Conv2d) -> int:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    c_out, c_in = conv.out_channels, conv.in_channels
    return max(min(c_out, c_in * k), min(c_in, c_out * k))


def _cp_rank_cap(plan: _Plan) -> int:
    """A CP rank at which the factorisation costs at least as many MACs as the dense layer."""
    per_rank = max(1, plan.macs_of((1,)))
    return max(1, plan.macs_before // per_rank + 1)


def _mode_sizes(plan: _Plan) -> tuple[int, ...]:
    """The largest useful rank per factor: min(shape) for SVD, the channel counts for Tucker,
    the CP rank at which the factorisation stops saving MACs for CP."""
    if plan.method == "svd":
        return (min(plan.module.weight.shape),)
    if plan.method == "cp":
        return (_cp_rank_cap(plan),)
    return tuple(plan.module.weight.shape[:2])


def _round_ranks(plan: _Plan, ranks: tuple[int, ...], multiple: int) -> tuple[int, ...]:
    """Each rank rounded up to a multiple of ``multiple``, capped at its mode's size."""
    if multiple == 1:
        return tuple(ranks)
    return tuple(
        min(cap, multiple * math.ceil(r / multiple)) for r, cap in zip(ranks, _mode_sizes(plan))
    )


def _select(plan: _Plan, config: LowRank) -> tuple[int, ...]:
    """Ranks for one layer under the per-layer rules (everything but ``budget``), rounded to
    ``config.round_to``; MAC targets are searched with the rounded ranks."""
    m = config.round_to
    return _round_ranks(plan, _select_raw(plan, config, lambda r: _round_ranks(plan, r, m)), m)


def _select_raw(
    plan: _Plan, config: LowRank, rounded: Callable[[tuple[int, ...]], tuple[int, ...]]
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
        target = config.macs_ratio * plan.macs_before
        return (R.largest_rank_within(lambda r: plan.macs_of(rounded((r,))), full, target),)
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
        target = config.macs_ratio * plan.macs_before
        cap = _cp_rank_cap(plan)
        return (R.largest_rank_within(lambda r: plan.macs_of(rounded((r,))), cap, target),)
    if rule == "ratio":
        return (R.ratio_rank(c_out, config.ratio), R.ratio_rank(c_in, config.ratio))
    options = _tucker_options(plan, config.round_to)
    if not options:  # nothing saves MACs (e.g. rounding caps every rank at full size)
        return (c_out, c_in)
    target = config.macs_ratio * plan.macs_before
    within = [o for o in options if o[0] <= target]
    # the lowest error bound that fits; when nothing fits, the cheapest option
    return min(within, key=lambda o: (o[1], o[0]))[2] if within else options[0][2]


def _budget_curve(
    plan: _Plan, round_to: int = 1
) -> tuple[list[tuple[int, float]], list[tuple[int, ...]]]:
    """Options ``(macs, estimated relative squared error)`` from dense to rank 1, with ranks
    (rounded up to multiples of ``round_to``; repeated options are dropped).

    Error estimates: SVD exact (Eckart–Young); Tucker the HOSVD bound (see
    :func:`_tucker_options`; only its Pareto front is offered, so errors grow as MACs fall);
    CP the larger mode's discarded energy (a lower bound: a CP model of rank R has unfoldings
    of rank at most R).
    """
    tail = _discarded_energy(plan)
    options: list[tuple[int, float]] = [(plan.macs_before, 0.0)]
    ranks: list[tuple[int, ...]] = [()]
    if plan.method == "tucker":
        # the Pareto front: walking up from the cheapest, keep what beats every cheaper error
        front, best = [], math.inf
        for macs, err, cand in _tucker_options(plan, round_to):
            if err < best:
                front.append((macs, err, cand))
                best = err
        for macs, err, cand in reversed(front):
            options.append((macs, err))
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
        macs = plan.macs_of(cand)
        if macs < options[-1][0]:
            options.append((macs, err))
            ranks.append(cand)
    return options, ranks


# --------------------------------------------------------------------------------------------
# The handler
# --------------------------------------------------------------------------------------------


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(plan: _Plan, config: LowRank) -> tuple[nn.Module, float, int]:
    """The replacement module, its relative weight error and its parameter count."""
    module = plan.module
    w = module.weight.detach().to(torch.float64)
    if plan.method == "svd":
        new = svd_linear(module, plan.ranks[0])
        approx = new[1].weight.detach().double() @ new[0].weight.detach().double()
        params = svd_params(
            module.in_features, module.out_features, plan.ranks[0], module.bias is not None
        )
    elif plan.method == "cp":
        factors = cp_factors(
            module.weight, plan.ranks[0], n_iter_max=config.n_iter_max, seed=config.seed
        )
        fuse = config.cp_fuse_spatial
        new, approx = cp_conv(module, factors, fuse_spatial=fuse), cp_reconstruct(factors)
        params = cp_params(module, plan.ranks[0], fuse_spatial=fuse)
    else:
        factors = tucker2_factors(
            module.weight,
            plan.ranks,
            method=config.tucker_method,
            n_iter_max=config.n_iter_max,
            seed=config.seed,
        )
        new, approx = tucker2_conv(module, factors), tucker2_reconstruct(factors)
        params = tucker2_params(module, plan.ranks)
    norm = float(w.norm()) or 1.0
    new.train(module.training)
    return new, float((approx.to(w.device) - w).norm()) / norm, params


@register_handler(LowRank)
def _apply(
    model: nn.Module,
    config: LowRank,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> LowRankReport:
    """Decompose the chosen layers of ``model`` in place; see :class:`LowRank`."""
    chosen, rows = _targets(model, config, filter_fn)
    if example_inputs is None:
        raise ValueError(
            "low-rank needs example_inputs (e.g. torch.randn(1, 3, 32, 32)) to know each layer's "
            "feature-map size and so its MACs"
        )
    shapes = _shapes(model, [m for _, m, _ in chosen], example_inputs)
    plans = []
    for name, module, method in chosen:
        if id(module) not in shapes:
            p = _params(module)
            rows.append(
                LayerDecomposition(
                    name, method, (), 0, 0, p, p, None, "not called in the forward pass"
                )
            )
            continue
        plans.append(_plan(name, module, method, shapes[id(module)], config.cp_fuse_spatial))

    if config.rank == "budget":
        curves = [_budget_curve(p, config.round_to) for p in plans]
        budget = config.macs_ratio * sum(p.macs_before for p in plans)
        picks = R.allocate_budget([c[0] for c in curves], budget)
        for plan, (_, ranks), pick in zip(plans, curves, picks):
            plan.ranks = ranks[pick]
            if pick == 0:
                plan.note = "kept dense by the MAC budget allocation"
    else:
        for plan in plans:
            plan.ranks = _select(plan, config)

    # compute every replacement before touching the model, so a failure leaves it intact
    replacements = []
    for plan in plans:
        params_before = _params(plan.module)
        if not plan.note:
            after = plan.macs_of(plan.ranks)
            if after >= plan.macs_before:
                plan.note = (
                    f"ranks {plan.ranks} would not reduce MACs ({plan.macs_before:,} -> {after:,})"
                )
        if plan.note:
            rows.append(
                LayerDecomposition(
                    plan.name,
                    plan.method,
                    plan.ranks,
                    plan.macs_before,
                    plan.macs_before,
                    params_before,
                    params_before,
                    None,
                    plan.note,
                )
            )
            continue
        new, error, params_after = _build(plan, config)
        replacements.append((plan.name, new))
        rows.append(
            LayerDecomposition(
                plan.name,
                plan.method,
                tuple(plan.ranks),
                plan.macs_before,
                plan.macs_of(plan.ranks),
                params_before,
                params_after,
                error,
            )
        )
    for name, new in replacements:
        set_submodule(model, name, new)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    rows.sort(key=lambda r: order.get(r.name, len(order)))
    return LowRankReport(rows)
