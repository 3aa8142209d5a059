"""Whole-model low-rank decomposition: the ``LowRank`` config and its ``compress_`` handler.

Each chosen layer is replaced by an ``nn.Sequential`` of standard layers (so checkpoints rebuild
it and ONNX exports it): Linear by truncated SVD (plain, or activation-aware with ASVD / SVD-LLM
whitening from calibration inputs, :mod:`nnshrink.lowrank.whitening`), Conv2d by CP or Tucker-2.
Ranks are planned in
:mod:`nnshrink.lowrank.planning` from the pure selectors in :mod:`nnshrink.lowrank.rank`. Layers
whose decomposition would not reduce MACs (parameters, under the parameter rules),
grouped/depthwise convs and 1x1 convs (for CP/Tucker) are left alone and reported as skipped.
Fine-tuning afterwards is the caller's job (e.g. ``nnshrink.train.fit``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import (
    Config,
    ConfigError,
    LayerSelection,
    register_handler,
    set_submodule,
)
from . import rank as R
from .cp import cp_conv, cp_factors, cp_reconstruct
from .planning import LayerPlan, budget_curve, plan_layer, select_ranks, tucker_options
from .svd import svd_linear
from .targets import (
    factorisable_conv_reason,  # noqa: F401  (advise.sensitivity imports it here)
    layer_shapes,
    select_targets,
)
from .tucker import tucker2_conv, tucker2_factors, tucker2_reconstruct
from .whitening import (
    WHITENINGS,
    InputStatistics,
    Whitener,
    output_error,
    whitened_svd_linear,
    whitener_for,
)

#: per_layer may override these (the per-layer rank rules)
RANK_FIELDS = ("rank", "energy", "ratio", "macs_ratio", "params_ratio")


@dataclasses.dataclass(frozen=True)
class LowRank(Config, LayerSelection):
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
            ``"params"`` (the same with at most ``params_ratio`` of each layer's parameters),
            ``"evbmf"`` (analytic EVBMF, per channel mode for Tucker/CP) or ``"budget"``
            (``macs_ratio`` of the MACs of all candidate layers together, allocated greedily by
            estimated reconstruction error per MAC saved; with ``budget_on="params"``,
            ``params_ratio`` of their parameters).
        energy: kept fraction of the squared spectrum for ``rank="energy"``.
        ratio: fraction of the full rank for ``rank="ratio"``.
        macs_ratio: fraction of MACs kept, per layer (``"macs"``) or overall (``"budget"``).
        params_ratio: fraction of parameters kept, per layer (``"params"``) or overall
            (``"budget"`` with ``budget_on="params"``).
        budget_on: what ``rank="budget"`` limits: ``"macs"`` or ``"params"``.
        linear: with ``cp``/``tucker``, also decompose Linear layers by SVD.
        whitening: how Linear layers are truncated. ``"none"``: plain SVD of ``W``
            (Eckart–Young in weight space). ``"asvd"``: SVD of ``W diag(mean|x|^alpha)`` (ASVD,
            Yuan et al. 2023). ``"svd-llm"``: SVD of ``W L`` with ``X Xᵀ = L Lᵀ`` (SVD-LLM, Wang
            et al. 2025), optimal in output error. Both need calibration data as
            ``example_inputs`` (a tensor, a list of batches, a loader of ``(x, y)``); their
            spectra also drive ``rank="energy"`` and the ``"budget"`` allocation.
        alpha: ASVD's exponent (0.5 in the paper).
        calibration_batches: at most this many calibration batches (whitening only).
        include: decompose only these layers (names, regexes or ``@`` tokens); a layer named
            exactly that cannot be decomposed is an error. ``layers`` is its deprecated name.
        exclude: layers to leave alone.
        per_layer: ``{pattern: {"rank": ..., "ratio": ...} | None}`` overrides of the per-layer
            rank rule (not with ``rank="budget"``); ``None`` leaves a layer dense.
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
            With ``cp_fallback`` it applies to the fallback CP layers.
        cp_fallback: with ``method="tucker"``, decompose by CP the convs where no Tucker-2
            shape cuts MACs (parameters, under the parameter rules), instead of leaving them
            dense. That happens when ``round_to``
            caps every rank at the channel count: ResNet-20's 16-channel convs with
            ``round_to=16``, which CP at rank 16 still cuts 3.5x (fused). The report's
            ``method`` column says which layers fell back.

    Example:
        >>> import nnshrink as ns  # doctest: +SKIP
        >>> ns.compress_(model, LowRank(method="tucker", rank="macs", macs_ratio=0.5),
        ...              example_inputs=torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    """

    kind: ClassVar[str] = "low-rank"
    renamed: ClassVar[dict[str, Any]] = {"layers": "include"}
    method: Literal["svd", "cp", "tucker"] = "tucker"
    rank: Literal["energy", "ratio", "macs", "params", "evbmf", "budget"] = "energy"
    energy: float = 0.9
    ratio: float = 0.5
    macs_ratio: float = 0.5
    params_ratio: float = 0.5
    budget_on: Literal["macs", "params"] = "macs"
    linear: bool = False
    whitening: Literal["none", "asvd", "svd-llm"] = "none"
    alpha: float = 0.5
    calibration_batches: int = 32
    tucker_method: Literal["hosvd", "hooi"] = "hosvd"
    n_iter_max: int = 50
    seed: int = 0
    round_to: int = 1
    cp_fuse_spatial: bool = False
    cp_fallback: bool = False

    @property
    def cost(self) -> Literal["macs", "params"]:
        """What the ``"macs"``/``"params"``/``"budget"`` rules limit: MACs or parameters."""
        return "params" if self.rank == "params" or self.budget_on == "params" else "macs"

    @property
    def cost_ratio(self) -> float:
        """The fraction of that cost kept: ``params_ratio`` or ``macs_ratio``."""
        return self.params_ratio if self.cost == "params" else self.macs_ratio

    def validate(self) -> None:
        if self.round_to < 1:
            raise ConfigError(f"low-rank.round_to must be >= 1, got {self.round_to}")
        if self.cp_fallback and self.method != "tucker":
            raise ConfigError(
                f"low-rank.cp_fallback applies to method='tucker' only (got method="
                f"{self.method!r}); drop it or set method: tucker"
            )
        if self.cp_fuse_spatial and self.method != "cp" and not self.cp_fallback:
            raise ConfigError(
                f"low-rank.cp_fuse_spatial applies to CP layers: method='cp', or "
                f"method='tucker' with cp_fallback (got method={self.method!r}); drop it or "
                "set method: cp"
            )
        if self.budget_on == "params" and self.rank != "budget":
            raise ConfigError(
                f"low-rank.budget_on applies to rank='budget' (got rank={self.rank!r}); for a "
                "per-layer parameter cut use rank: params"
            )
        for field in ("energy", "ratio", "macs_ratio", "params_ratio"):
            value = getattr(self, field)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"low-rank.{field} must be in (0, 1], got {value}")
        if self.n_iter_max < 1:
            raise ConfigError(f"low-rank.n_iter_max must be >= 1, got {self.n_iter_max}")
        if self.whitening not in WHITENINGS:
            raise ConfigError(
                f"low-rank.whitening must be one of {list(WHITENINGS)}, got {self.whitening!r}"
            )
        if self.whitening != "none" and not (self.method == "svd" or self.linear):
            raise ConfigError(
                f"low-rank.whitening={self.whitening!r} applies to Linear layers (SVD): set "
                "method='svd', or linear=True to decompose the Linear layers too"
            )
        if not 0.0 < self.alpha <= 4.0:
            raise ConfigError(f"low-rank.alpha must be in (0, 4], got {self.alpha}")
        if self.calibration_batches < 1:
            raise ConfigError(
                f"low-rank.calibration_batches must be >= 1, got {self.calibration_batches}"
            )
        for pattern, value in self.per_layer.items():
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"low-rank.per_layer[{pattern!r}]: give a mapping of rank fields, e.g. "
                    "{'rank': 'ratio', 'ratio': 0.25}, or null to leave the layer dense"
                )
            other = sorted(set(value) - set(RANK_FIELDS) - {"skip"})
            if other:
                raise ConfigError(
                    f"low-rank.per_layer[{pattern!r}]: only {list(RANK_FIELDS)} can be set per "
                    f"layer, not {other}"
                )
            if self.rank == "budget" and value:
                raise ConfigError(
                    f"low-rank.per_layer[{pattern!r}]: rank='budget' allocates every layer's rank "
                    "from one budget; per-layer rank rules do not apply (use null to keep a layer "
                    "dense, or a per-layer rank rule instead of the budget)"
                )
            # each override must make a valid config on its own
            dataclasses.replace(
                self, per_layer={}, **{k: v for k, v in value.items() if k != "skip"}
            )


@dataclasses.dataclass
class LayerDecomposition:
    """One row of the report; ``note`` says why a layer was skipped (empty when decomposed).

    ``rel_error`` is the relative weight error ``||W - W'|| / ||W||``; ``output_error`` the
    relative output error ``||(W - W') X|| / ||W X||`` on the calibration inputs (with
    whitening only).
    """

    name: str
    method: str
    ranks: tuple[int, ...]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    rel_error: float | None
    note: str = ""
    output_error: float | None = None

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
# The handler
# --------------------------------------------------------------------------------------------


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(
    plan: LayerPlan, config: LowRank, whitener: Whitener | None = None
) -> tuple[nn.Module, float]:
    """The replacement module and its relative weight error."""
    module = plan.module
    w = module.weight.detach().to(torch.float64)
    if plan.method == "svd":
        if whitener is None:
            new = svd_linear(module, plan.ranks[0])
        else:
            new = whitened_svd_linear(module, plan.ranks[0], whitener)
        approx = new[1].weight.detach().double() @ new[0].weight.detach().double()
    elif plan.method == "cp":
        factors = cp_factors(
            module.weight, plan.ranks[0], n_iter_max=config.n_iter_max, seed=config.seed
        )
        new = cp_conv(module, factors, fuse_spatial=config.cp_fuse_spatial)
        approx = cp_reconstruct(factors)
    else:
        factors = tucker2_factors(
            module.weight,
            plan.ranks,
            method=config.tucker_method,
            n_iter_max=config.n_iter_max,
            seed=config.seed,
        )
        new, approx = tucker2_conv(module, factors), tucker2_reconstruct(factors)
    norm = float(w.norm()) or 1.0
    new.train(module.training)
    return new, float((approx.to(w.device) - w).norm()) / norm


def _calibrate(
    model: nn.Module, config: LowRank, linears: list[nn.Linear], batches: list
) -> dict[int, tuple[Whitener, InputStatistics]]:
    """One pass over the calibration batches: each Linear's input statistics and whitener."""
    from ..pruning.oneshot.calibration import run_batches

    stats = {id(m): InputStatistics(m.in_features) for m in linears}
    run_batches(model, batches, {m: stats[id(m)].add for m in linears})
    out = {}
    for m in linears:
        if stats[id(m)].rows:
            out[id(m)] = (whitener_for(config.whitening, stats[id(m)], config.alpha), stats[id(m)])
    return out


@register_handler(LowRank)
def _apply(
    model: nn.Module,
    config: LowRank,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> LowRankReport:
    """Decompose the chosen layers of ``model`` in place; see :class:`LowRank`."""
    chosen, rows = select_targets(model, config, filter_fn)
    if example_inputs is None:
        raise ValueError(
            "low-rank needs example_inputs (e.g. torch.randn(1, 3, 32, 32)) to know each layer's "
            "feature-map size and so its MACs"
            + ("; with whitening, calibration batches" if config.whitening != "none" else "")
        )
    from ..pruning.oneshot.calibration import calibration_batches

    # shapes (MACs) from the first batch; with whitening, statistics from every batch
    limit = config.calibration_batches if config.whitening != "none" else 1
    batches = calibration_batches(example_inputs, limit, kind="low-rank")
    first = batches[0]
    if config.whitening == "none":
        batches = []
    shapes = layer_shapes(model, [m for _, m, _, _ in chosen], first)
    whiteners: dict[int, tuple[Whitener, InputStatistics]] = {}
    if batches:
        linears = [m for _, m, method, _ in chosen if method == "svd" and id(m) in shapes]
        whiteners = _calibrate(model, config, linears, batches)
    cost = config.cost
    cost_name = "parameter" if cost == "params" else "MAC"
    plans, overrides = [], {}
    for name, module, method, layer_overrides in chosen:
        if id(module) not in shapes:
            p = _params(module)
            rows.append(
                LayerDecomposition(
                    name, method, (), 0, 0, p, p, None, "not called in the forward pass"
                )
            )
            continue
        plan = plan_layer(name, module, method, shapes[id(module)], config.cp_fuse_spatial, cost)
        if config.cp_fallback and method == "tucker" and not tucker_options(plan, config.round_to):
            plan = plan_layer(name, module, "cp", shapes[id(module)], config.cp_fuse_spatial, cost)
        if id(module) in whiteners:
            plan.whitened = whiteners[id(module)][0].apply(module.weight)
        plans.append(plan)
        overrides[name] = {k: v for k, v in layer_overrides.items() if k in RANK_FIELDS}

    if config.rank == "budget":
        curves = [budget_curve(p, config.round_to) for p in plans]
        budget = config.cost_ratio * sum(p.cost_before for p in plans)
        picks = R.allocate_budget([c[0] for c in curves], budget)
        for plan, (_, ranks), pick in zip(plans, curves, picks):
            plan.ranks = ranks[pick]
            if pick == 0:
                plan.note = f"kept dense by the {cost_name} budget allocation"
    else:
        for plan in plans:
            layer_config = (
                dataclasses.replace(config, **overrides[plan.name])
                if overrides[plan.name]
                else config
            )
            plan.ranks = select_ranks(plan, layer_config)

    # compute every replacement before touching the model, so a failure leaves it intact
    replacements = []
    for plan in plans:
        if not plan.note:
            after = plan.cost_of(plan.ranks)
            if after >= plan.cost_before:
                plan.note = (
                    f"ranks {plan.ranks} would not reduce {cost_name}s "
                    f"({plan.cost_before:,} -> {after:,})"
                )
        if plan.note:
            rows.append(
                LayerDecomposition(
                    plan.name,
                    plan.method,
                    plan.ranks,
                    plan.macs_before,
                    plan.macs_before,
                    plan.params_before,
                    plan.params_before,
                    None,
                    plan.note,
                )
            )
            continue
        whitener, stats = whiteners.get(id(plan.module), (None, None))
        new, error = _build(plan, config, whitener)
        out_error = None
        if stats is not None:
            approx = new[1].weight.detach().double() @ new[0].weight.detach().double()
            out_error = output_error(plan.module.weight, approx, stats.gram)
        replacements.append((plan.name, new))
        rows.append(
            LayerDecomposition(
                plan.name,
                plan.method,
                tuple(plan.ranks),
                plan.macs_before,
                plan.macs_of(plan.ranks),
                plan.params_before,
                plan.params_of(plan.ranks),
                error,
                output_error=out_error,
            )
        )
    for name, new in replacements:
        set_submodule(model, name, new)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    rows.sort(key=lambda r: order.get(r.name, len(order)))
    return LowRankReport(rows)
