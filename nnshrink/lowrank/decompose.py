"""Whole-model low-rank decomposition: the ``LowRank`` config and its ``compress_`` handler.

Each chosen layer is replaced by an ``nn.Sequential`` of standard layers (so checkpoints rebuild
it and ONNX exports it): Linear by truncated SVD, Conv2d by CP or Tucker-2. Ranks are planned in
:mod:`nnshrink.lowrank.planning` from the pure selectors in :mod:`nnshrink.lowrank.rank`. Layers
whose decomposition would not reduce MACs (parameters, under the parameter rules),
grouped/depthwise convs and 1x1 convs (for CP/Tucker) are left alone and reported as skipped.
Fine-tuning afterwards is the caller's job (e.g. ``nnshrink.train.fit``).
"""

from __future__ import annotations

import dataclasses
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
from .cp import cp_conv, cp_factors, cp_reconstruct
from .planning import LayerPlan, budget_curve, plan_layer, select_ranks, tucker_options
from .svd import svd_linear
from .tucker import tucker2_conv, tucker2_factors, tucker2_reconstruct


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
    method: Literal["svd", "cp", "tucker"] = "tucker"
    rank: Literal["energy", "ratio", "macs", "params", "evbmf", "budget"] = "energy"
    energy: float = 0.9
    ratio: float = 0.5
    macs_ratio: float = 0.5
    params_ratio: float = 0.5
    budget_on: Literal["macs", "params"] = "macs"
    linear: bool = False
    layers: tuple[str, ...] = ()
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
# Which layers, called on which feature-map sizes (ranks: see planning.py)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The handler
# --------------------------------------------------------------------------------------------


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(plan: LayerPlan, config: LowRank) -> tuple[nn.Module, float]:
    """The replacement module and its relative weight error."""
    module = plan.module
    w = module.weight.detach().to(torch.float64)
    if plan.method == "svd":
        new = svd_linear(module, plan.ranks[0])
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
    cost = config.cost
    cost_name = "parameter" if cost == "params" else "MAC"
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
        plan = plan_layer(name, module, method, shapes[id(module)], config.cp_fuse_spatial, cost)
        if config.cp_fallback and method == "tucker" and not tucker_options(plan, config.round_to):
            plan = plan_layer(name, module, "cp", shapes[id(module)], config.cp_fuse_spatial, cost)
        plans.append(plan)

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
            plan.ranks = select_ranks(plan, config)

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
        new, error = _build(plan, config)
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
            )
        )
    for name, new in replacements:
        set_submodule(model, name, new)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    rows.sort(key=lambda r: order.get(r.name, len(order)))
    return LowRankReport(rows)
