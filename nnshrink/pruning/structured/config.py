"""The structured-pruning config (kind ``"structured-pruning"``) and what pruning reports.

Example:
    >>> cfg = StructuredPruning(sparsity=0.3, round_to=8, exclude=("fc",))
    >>> cfg.to_dict()["type"], cfg.head_amount
    ('structured-pruning', 0.3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from nnshrink._deprecated import warn
from nnshrink.core import Config, ConfigError, LayerSelection

from ..criteria import CRITERIA

__all__ = ["GroupRow", "StructuredPruning", "StructuredPruningSummary"]


def _scope(value: Any) -> dict[str, str]:
    return {"scope": "global" if value else "layer"}


@dataclasses.dataclass(frozen=True)
class StructuredPruning(Config, LayerSelection):
    """Remove whole channels (conv filters, linear units) and attention heads; shrink the layers
    physically.

    Args:
        sparsity: fraction of channels removed per group (or overall with ``scope="global"``).
            Ignored when ``target_macs`` is set.
        head_sparsity: fraction of attention heads removed (default: ``sparsity``). Heads go
            whole: their q/k/v rows, the output projection's columns and the module's head
            attributes (``num_heads``, ``all_head_size``, ...) together; with grouped-query
            attention whole key/value groups go.
        criterion: channel importance: ``l1``, ``l2``, ``bn_scale`` (|gamma|), ``taylor`` (needs
            ``.grad`` on the weights), ``fpgm``, ``activation`` (what the next layers read from
            each channel, ``||W[:, j]|| · ||X_j||`` on ``example_inputs``: pass real data, e.g.
            a batch of calibration sentences) or ``random``.
        scope: ``"layer"`` (every group loses ``sparsity``) or ``"global"`` (channels of all
            groups ranked together, scores divided by each group's mean; heads apart).
        target_macs: prune in steps until the MACs per sample (counted on the first sample of
            ``example_inputs``) are <= this, then stop.
        target_latency_ms: prune until one forward pass on ``example_inputs`` (pass them at the
            batch size you deploy) takes <= this many milliseconds, measured (median, in
            ``latency_runtime``, at the current ``torch`` thread count): the smallest one-shot
            ``sparsity`` that meets it is found by bisection on pruned copies, each timed,
            then applied. MACs are not time: odd channel counts can be slower than the dense
            layer (``benchmarks/structured_resnet20_latency.py``), so combine with ``round_to``.
        latency_runtime: ``"eager"`` or ``"onnxruntime"``, for ``target_latency_ms``.
        round_to: kept channel counts are multiples of this (e.g. 8), or the whole group (not
            applied to heads).
        latency_table: round each channel group's kept count to the nearest top of a step in
            its measured time (:mod:`.latency_table`): the group's ``Conv2d`` / ``Linear``
            layers are timed alone, in ``latency_runtime``, on their input shapes from
            ``example_inputs`` (pass the deployed batch size), at every allowed count within
            ``max(16, planned // 4)`` of the planned one; the count kept is the nearest one after
            which the time rises. ``round_to`` with the block size measured instead of guessed
            (candidates still respect ``round_to``); the summary's ``latency_table`` lists each
            choice.
        reconstruct: after pruning, refit every layer whose inputs were pruned (``Linear``,
            GPT-2 ``Conv1D``, ungrouped ``Conv2d``) by least squares so that its output on
            ``example_inputs`` matches the dense model's (He et al. 2017, ThiNet;
            :mod:`.reconstruct`), in forward order. For use without fine-tuning, or before it.
            Pass real data with more rows (tokens, or batch x output positions) than the widest
            refit layer has inputs; it costs a copy of the model and two partial forward
            passes per layer. The summary's ``reconstructed`` lists each layer's output error
            before and after.
        prune_hidden: also prune the hidden width of transformers (the residual stream through
            LayerNorm/RMSNorm, embeddings, position embeddings and tied heads). Off by default:
            unlike heads and MLP neurons it changes what the norms compute.
        strict: an op the graph cannot follow, a planned edit that breaks the forward, or
            nothing prunable raises ``UnsupportedModelError`` (default). ``False`` keeps those
            channels, warns with the reason per op, and prunes the rest.
        include: module patterns; when given, only groups produced by a matching layer are pruned.
        exclude: module patterns (names, regexes, ``@first``/``@last``/``@conv``/``@linear``/
            ``@below:N``) whose output channels (and heads) are kept. The layer producing the
            model output is always kept.
        per_layer: ``{pattern: sparsity | {field: value} | None}`` for groups produced by a
            matching layer (``{"head_sparsity": 0.25}`` for heads); ``None`` keeps the layer.
        seed: seed for the ``random`` criterion.

    Deprecated names (warn, removal in 0.6): ``ratio`` (``sparsity``), ``ignore`` (``exclude``),
    ``global_ranking`` (``scope="global"``).

    Example:
        >>> StructuredPruning(sparsity=0.3, round_to=8).to_dict()["type"]
        'structured-pruning'
    """

    kind: ClassVar[str] = "structured-pruning"
    amount_field: ClassVar[str] = "sparsity"
    renamed: ClassVar[dict[str, Any]] = {
        "ratio": "sparsity",
        "ignore": "exclude",
        "global_ranking": _scope,
    }
    sparsity: float = 0.5
    head_sparsity: float | None = None
    criterion: Literal["l1", "l2", "bn_scale", "taylor", "fpgm", "activation", "random"] = "l2"
    scope: Literal["layer", "global"] = "layer"
    target_macs: int | None = None
    target_latency_ms: float | None = None
    latency_runtime: Literal["eager", "onnxruntime"] = "eager"
    round_to: int = 1
    latency_table: bool = False
    reconstruct: bool = False
    prune_hidden: bool = False
    strict: bool = True
    seed: int = 0

    def validate(self) -> None:
        for field in ("sparsity", "head_sparsity"):
            value = getattr(self, field)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{self.kind}.{field} must be in [0, 1), got {value}")
        if self.criterion not in CRITERIA:
            raise ConfigError(f"{self.kind}.criterion must be one of {CRITERIA}")
        if self.scope not in ("layer", "global"):
            raise ConfigError(f"{self.kind}.scope must be 'layer' or 'global', got {self.scope!r}")
        if self.target_macs is not None and self.target_macs <= 0:
            raise ConfigError(f"{self.kind}.target_macs must be positive, got {self.target_macs}")
        if self.target_latency_ms is not None:
            if self.target_latency_ms <= 0:
                raise ConfigError(
                    f"{self.kind}.target_latency_ms must be positive, got {self.target_latency_ms}"
                )
            if self.target_macs is not None:
                raise ConfigError(f"{self.kind}: set target_macs or target_latency_ms, not both")
        if self.latency_runtime not in ("eager", "onnxruntime"):
            raise ConfigError(
                f"{self.kind}.latency_runtime must be 'eager' or 'onnxruntime', got "
                f"{self.latency_runtime!r}"
            )
        if self.round_to < 1:
            raise ConfigError(f"{self.kind}.round_to must be >= 1, got {self.round_to}")
        for name, value in self.per_layer.items():
            values = value if isinstance(value, Mapping) else {"sparsity": value}
            for field in ("sparsity", "head_sparsity"):
                v = values.get(field)
                if v is not None and not 0.0 <= v < 1.0:
                    raise ConfigError(f"{self.kind}.per_layer[{name!r}].{field} must be in [0, 1)")

    @property
    def head_amount(self) -> float:
        """The head sparsity in effect (``head_sparsity``, else ``sparsity``)."""
        return self.sparsity if self.head_sparsity is None else self.head_sparsity

    # the names before 0.5, read-only, for code written against them
    @property
    def ratio(self) -> float:
        warn(f"{self.kind}.ratio", f"{self.kind}.sparsity")
        return self.sparsity

    @property
    def ignore(self) -> tuple[str, ...]:
        warn(f"{self.kind}.ignore", f"{self.kind}.exclude")
        return self.exclude

    @property
    def global_ranking(self) -> bool:
        warn(f"{self.kind}.global_ranking", f"{self.kind}.scope")
        return self.scope == "global"


@dataclasses.dataclass
class GroupRow:
    """One summary row: the modules of a group and its channel (or head) count before and after."""

    modules: tuple[str, ...]
    channels_before: int
    channels_after: int
    kind: str = "channels"


@dataclasses.dataclass
class StructuredPruningSummary:
    """What :func:`compress_` with :class:`StructuredPruning` did (MACs per sample).

    Attributes:
        groups: one row per pruned group (``kind`` ``"heads"``: counts are heads).
        tracer: ``"fx"`` or ``"eager"`` (which tracer reached the model).
        attributes: ``{module: {attribute: [old, new]}}`` of head attributes nnshrink updated.
        skipped: why channels were kept that could otherwise have gone (hidden width with
            ``prune_hidden=False``, ops not followed with ``strict=False``).
        latency_ms_before / latency_ms_after / latency_trials: with ``target_latency_ms``, the
            measured latency of the model before and after, and each bisection trial's
            ``{"sparsity", "latency_ms"}``.
        reconstructed: with ``reconstruct=True``, per refit layer ``{"name", "rows",
            "error_before", "error_after", "refit"}`` (relative output error against the dense
            layer on ``example_inputs``).
        latency_table: with ``latency_table=True``, per re-costed group of the applied plan
            ``{"modules", "planned", "chosen", "ms_planned", "ms_chosen"}`` (its layers' summed
            time at the planned and the chosen count).
    """

    groups: list[GroupRow]
    macs_before: int | None
    macs_after: int | None
    params_before: int
    params_after: int
    steps: int = 1
    target_reached: bool | None = None
    latency_ms_before: float | None = None
    latency_ms_after: float | None = None
    latency_trials: list[dict[str, float]] = dataclasses.field(default_factory=list)
    latency_table: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    reconstructed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tracer: str = "fx"
    attributes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return dataclasses.asdict(self)
