"""Fine-grained (unstructured) pruning: zero individual weights and keep them zero while training.

Design — why a non-persistent mask buffer plus a callback, not ``torch.nn.utils.prune`` or a
parametrization:

- The pruned weights are zeroed *in the parameter itself*, so the model stays an ordinary module:
  its ``state_dict`` has the usual keys (``weight``, not ``weight_orig``), its forward runs no hook,
  and it saves, loads into a freshly built model and exports to ONNX unchanged. Hooks and
  parametrizations rename state-dict keys and add a multiply to every forward pass.
- The mask lives in a **non-persistent** buffer ``<param>_mask`` (``weight_mask``): it follows
  ``.to()``/``deepcopy`` but is not written to checkpoints. The zeros are, so
  :func:`masks_from_zeros` restores the masks after loading.
- Keeping zeros at zero is the training loop's job, which the user owns: :class:`MaskCallback`
  for :func:`nnshrink.train.fit` zeroes masked gradients after ``backward`` (so momentum and Adam
  moments never accumulate for pruned weights) and re-applies the masks after every optimizer step
  (so weight decay, momentum left from before pruning, or any other optimizer rule cannot revive
  them). In a hand-written loop call :func:`mask_gradients_` and :func:`apply_masks_` at the same
  two points. We never patch the optimizer.
- :func:`make_permanent` drops the buffers; what remains is plain tensors with zeros.

The mask helpers and the pure score → mask functions live in :mod:`nnshrink.pruning.masks`; they
are re-exported here.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nnshrink._deprecated import module_getattr
from nnshrink.core import Config, ConfigError, LayerSelection, compress_, register_handler
from nnshrink.train import Callback

from .masks import (
    LAYER_TYPES,
    MASK_SUFFIX,
    apply_masks_,
    attach_mask,
    get_masks,
    global_masks,
    is_transposed_linear,
    iter_masks,
    lamp_scores,
    magnitude_scores,
    make_permanent,
    mask_from_scores,
    mask_gradients_,
    masks_from_zeros,
    matrix_to_weight,
    nm_mask_from_scores,
    parse_pattern,
    random_scores,
    weight_matrix,
)
from .schedules import Spacing, agp, at_progress, progress_points


@dataclasses.dataclass(frozen=True)
class MagnitudePruning(Config, LayerSelection):
    """Unstructured pruning: zero the smallest-magnitude (or random) weights of conv/linear layers.

    Args:
        sparsity: fraction of weights to zero over all chosen layers together (``scope="global"``,
            the default: one threshold, so layers end up unequally sparse) or in every layer
            (``scope="layer"``).
        scope: ``"global"`` (default) or ``"layer"``. N:M patterns rank within each group of M
            weights and ignore it.
        criterion: ``"magnitude"`` (|w|, Han et al. 2015), ``"lamp"`` (|w| rescaled per layer so
            that one global threshold is fair to every layer, Lee et al. 2021: the same mask as
            magnitude with ``scope="layer"``) or ``"random"`` (a baseline).
        pattern: ``None`` (unstructured) or ``"N:M"``, e.g. ``"2:4"``: keep the ``N`` largest of
            every ``M`` consecutive weights along the input dimension (see
            :func:`~nnshrink.pruning.masks.weight_matrix`); ``sparsity`` is then ``1 - N/M``.
        include: patterns of the layers to consider (default: every conv/linear layer).
        exclude: patterns of layers to leave dense (e.g. ``("@last",)`` for the output layer).
        per_layer: ``{pattern: sparsity | {"sparsity": s, "pattern": "N:M" | None} | None}``
            (first match wins); such layers are pruned on their own, ``None`` leaves one dense.
        include_bias: also prune biases (off by default: they are few and matter).
        layer_types: which layer types to prune, from ``"conv"`` and ``"linear"`` (Linear and
            Hugging Face ``Conv1D``).
        seed: seed for ``criterion="random"``.

    ``ignore`` is the deprecated name of ``exclude``.

    Why the defaults are ``scope="global"`` with ``criterion="lamp"``: a uniform per-layer
    sparsity prunes small layers (an output layer, a first conv) as hard as large redundant ones,
    and one |w| threshold is unfair across layers whose weight scales differ (and is arbitrary
    after a BatchNorm). LAMP's per-layer rescaling makes one threshold fair and keeps at least
    one weight in every layer. Measured with ``nnshrink prune --sparsity 0.9
    --finetune-epochs 2`` on a 2-epoch LeNet-300-100 (``benchmarks/prune_cli_finetune.py``): per
    layer −0.21 pt, global |w| +0.11 pt, global LAMP +0.16 pt. The one-shot LLM methods (Wanda,
    SparseGPT) rank within each layer, as their papers do; their magnitude baseline is
    ``scope="layer", criterion="magnitude"``.

    Example:
        >>> import nnshrink as ns
        >>> model = ns.models.create("lenet300")
        >>> cfg = MagnitudePruning(sparsity=0.9, per_layer={"5": 0.7})  # "5" is the last Linear
        >>> result = ns.compress_(model, cfg)
        >>> round(result.summary.sparsity, 2)
        0.9
    """

    kind: ClassVar[str] = "magnitude-pruning"
    renamed: ClassVar[dict[str, Any]] = {"ignore": "exclude"}
    amount_field: ClassVar[str | None] = "sparsity"

    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "global"
    criterion: Literal["magnitude", "lamp", "random"] = "lamp"
    pattern: str | None = None
    include_bias: bool = False
    layer_types: tuple[str, ...] = ("conv", "linear")
    seed: int = 0

    def validate(self) -> None:
        check_targets(self)
        if self.scope not in ("layer", "global"):
            raise ConfigError(
                f"magnitude-pruning: scope must be 'layer' or 'global', not {self.scope!r}"
            )
        if self.criterion not in ("magnitude", "lamp", "random"):
            raise ConfigError(
                f"magnitude-pruning: criterion must be 'magnitude', 'lamp' or 'random', not "
                f"{self.criterion!r} (structured criteria live in StructuredPruning)"
            )
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown or not self.layer_types:
            raise ConfigError(
                f"magnitude-pruning: layer_types {list(self.layer_types)} invalid; "
                f"choose from {sorted(LAYER_TYPES)}"
            )
        if self.pattern is not None and self.include_bias:
            raise ConfigError(
                "magnitude-pruning: pattern applies to weights only; drop include_bias or "
                "set pattern=None"
            )


def check_targets(config: Config) -> None:
    """Check ``sparsity``/``pattern`` of a pruning config and of each ``per_layer`` entry.

    Shared by :class:`MagnitudePruning` and the one-shot methods (Wanda, SparseGPT): an N:M
    pattern fixes the sparsity at ``1 - N/M``, so a sparsity that disagrees is an error.
    """
    kind = config.kind
    resolve_target(kind, "sparsity", config.sparsity, config.pattern, {})
    for pattern, value in config.per_layer.items():
        if value is None:
            continue
        overrides = dict(value) if isinstance(value, Mapping) else {"sparsity": value}
        resolve_target(kind, f"per_layer[{pattern!r}]", config.sparsity, config.pattern, overrides)


def resolve_target(
    kind: str, where: str, sparsity: float, pattern: str | None, overrides: dict[str, Any]
) -> tuple[float, tuple[int, int] | None]:
    """A layer's ``(sparsity, (N, M) or None)`` from the config's values and its overrides.

    A layer that overrides only ``pattern`` gets that pattern's sparsity; one that overrides
    only ``sparsity`` under a config-wide pattern is an error (write ``"pattern": None`` too).

    Example:
        >>> resolve_target("demo", "x", 0.5, None, {"pattern": "1:4"})
        (0.75, (1, 4))
    """
    sparsity = overrides.get("sparsity", sparsity)
    pattern = overrides.get("pattern", pattern)
    if not isinstance(sparsity, int | float) or isinstance(sparsity, bool):
        raise ConfigError(f"{kind}.{where}: sparsity must be a number, got {sparsity!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"{kind}: sparsity for {where} must be in [0, 1), got {sparsity}")
    if pattern is None:
        return float(sparsity), None
    try:
        n, m = parse_pattern(pattern)
    except ValueError as exc:
        raise ConfigError(f"{kind}.{where}: {exc}") from None
    implied = 1.0 - n / m
    if "pattern" in overrides and "sparsity" not in overrides:
        return implied, (n, m)
    if abs(sparsity - implied) > 1e-9:
        raise ConfigError(
            f"{kind}.{where}: pattern {pattern!r} keeps {n} of {m}, i.e. sparsity {implied:g}, "
            f"not {sparsity:g}; set sparsity={implied:g}, or pattern=None for unstructured "
            "(in per_layer: {'sparsity': ..., 'pattern': None})"
        )
    return implied, (n, m)


@dataclasses.dataclass(frozen=True)
class TensorSparsity:
    """One pruned tensor in a :class:`PruningSummary`."""

    name: str
    numel: int
    nonzero: int
    target: float

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.numel if self.numel else 0.0


@dataclasses.dataclass(frozen=True)
class PruningSummary:
    """What a pruning handler did: one row per pruned tensor plus totals over those tensors."""

    rows: tuple[TensorSparsity, ...]

    @property
    def numel(self) -> int:
        return sum(r.numel for r in self.rows)

    @property
    def nonzero(self) -> int:
        return sum(r.nonzero for r in self.rows)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.numel if self.numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "numel": self.numel,
            "nonzero": self.nonzero,
            "sparsity": self.sparsity,
            "layers": [{**dataclasses.asdict(r), "sparsity": r.sparsity} for r in self.rows],
        }

    def to_markdown(self) -> str:
        lines = ["| tensor | weights | non-zero | sparsity |", "|---|---:|---:|---:|"]
        for r in self.rows:
            lines.append(f"| {r.name} | {r.numel} | {r.nonzero} | {r.sparsity:.1%} |")
        lines.append(f"| **total** | {self.numel} | {self.nonzero} | {self.sparsity:.1%} |")
        return "\n".join(lines)


@register_handler(MagnitudePruning)
def _apply(
    model: nn.Module,
    config: MagnitudePruning,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> PruningSummary:
    """Zero weights of ``model`` in place per ``config`` and attach masks that keep them zero.

    Weights already masked stay pruned (they rank lowest), so applying a higher sparsity again
    continues an iterative schedule.
    """
    tensors = _select_tensors(model, config, filter_fn)
    if not tensors:
        raise ValueError(
            f"no layer to prune: MagnitudePruning looks for {list(config.layer_types)} layers "
            f"({', '.join(t.__name__ for k in config.layer_types for t in LAYER_TYPES[k])}) "
            "not excluded by include/exclude/per_layer/filter_fn"
        )
    generator = torch.Generator().manual_seed(config.seed)
    scores: dict[str, torch.Tensor] = {}
    for key, (module, pname, _) in tensors.items():
        param = getattr(module, pname).detach()
        if config.criterion == "magnitude":
            score = magnitude_scores(param)
        elif config.criterion == "lamp":
            score = lamp_scores(param)
        else:
            score = random_scores(param, generator)
        old = getattr(module, pname + MASK_SUFFIX, None)
        if old is not None:  # already pruned entries go first, so schedules only ever add zeros
            score = score.masked_fill(~old, float("-inf"))
        scores[key] = score

    pooled = [k for k, (_, _, target) in tensors.items() if target is None]
    new_masks: dict[str, torch.Tensor] = {}
    if pooled:
        if config.scope == "global":
            new_masks.update(global_masks({k: scores[k] for k in pooled}, config.sparsity))
        else:
            new_masks.update({k: mask_from_scores(scores[k], config.sparsity) for k in pooled})
    for key, (module, _, target) in tensors.items():
        if target is None:
            continue
        sparsity, nm = target
        if nm is None:
            new_masks[key] = mask_from_scores(scores[key], sparsity)
            continue
        matrix = weight_matrix(module, scores[key])
        if matrix.shape[1] % nm[1]:
            raise ConfigError(
                f"magnitude-pruning: layer {key!r} has {matrix.shape[1]} inputs, not a multiple "
                f"of {nm[1]} for pattern {nm[0]}:{nm[1]}; exclude it or use pattern=None there"
            )
        new_masks[key] = matrix_to_weight(module, nm_mask_from_scores(matrix, *nm))

    rows = []
    for key, (module, pname, target) in tensors.items():
        mask = new_masks[key]
        old = getattr(module, pname + MASK_SUFFIX, None)
        if old is not None:
            mask = mask & old
        attach_mask(module, pname, mask)
        goal = config.sparsity if target is None else target[0]
        rows.append(TensorSparsity(key, mask.numel(), int(mask.sum()), goal))
    return PruningSummary(tuple(rows))


def _prune(
    model: nn.Module,
    config: MagnitudePruning,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> PruningSummary:
    """``compress_(model, config)`` without the before/after measurements (schedules call it)."""
    return compress_(model, config, filter_fn=filter_fn, measure=False).summary


def _select_tensors(
    model: nn.Module,
    config: MagnitudePruning,
    filter_fn: Callable[[nn.Module, str], bool] | None,
) -> dict[str, tuple[nn.Module, str, tuple[float, tuple[int, int] | None] | None]]:
    """``{"layer.weight": (module, "weight", (sparsity, N:M) of the layer or None)}``.

    ``None`` means the config's own target (pooled into one ranking with ``scope="global"``);
    layers with ``per_layer`` overrides, or any layer under an N:M pattern, get their own.
    """
    types = tuple(t for k in config.layer_types for t in LAYER_TYPES[k])
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, types)
        or ("linear" in config.layer_types and is_transposed_linear(module))
    ]
    out: dict[str, tuple[nn.Module, str, Any]] = {}
    for layer in config.select(candidates, filter_fn=filter_fn, amount_field="sparsity"):
        own = {k: v for k, v in layer.overrides.items() if k in ("sparsity", "pattern")}
        target = None
        if own or config.pattern is not None:
            target = resolve_target(config.kind, layer.name, config.sparsity, config.pattern, own)
        pnames = ["weight"] + (["bias"] if config.include_bias else [])
        for pname in pnames:
            if isinstance(getattr(layer.module, pname, None), nn.Parameter):
                key = f"{layer.name}.{pname}" if layer.name else pname
                # a pattern groups weight columns; a bias is pruned by magnitude alone
                bias_target = None if target is None else (target[0], None)
                out[key] = (layer.module, pname, target if pname == "weight" else bias_target)
    return out


def scheduled_config(
    config: MagnitudePruning, progress: float, *, spacing: Spacing = "geometric"
) -> MagnitudePruning:
    """``config`` with every target replaced by its value at ``progress`` of an iterative schedule.

    Example:
        >>> scheduled_config(MagnitudePruning(sparsity=0.75), 0.5).sparsity
        0.5
    """
    return _scaled(config, lambda final: at_progress(final, progress, spacing=spacing))


def _scaled(config: MagnitudePruning, at: Callable[[float], float]) -> MagnitudePruning:
    """``config`` with its sparsity and every ``per_layer`` sparsity mapped through ``at``."""

    def step(value: Any) -> Any:
        if isinstance(value, Mapping) and "sparsity" in value:
            return {**value, "sparsity": at(value["sparsity"])}
        if isinstance(value, int | float) and not isinstance(value, bool):
            return at(value)
        return value  # None (left dense) or a mapping without a sparsity

    if config.pattern is not None:
        raise ConfigError(
            "magnitude-pruning: an N:M pattern has one sparsity (1 - N/M) and cannot follow a "
            "schedule; prune it in one shot (compress_) and fine-tune"
        )
    return dataclasses.replace(
        config,
        sparsity=at(config.sparsity),
        per_layer={p: step(v) for p, v in config.per_layer.items()},
    )


def prune_iteratively(
    model: nn.Module,
    train_fn: Callable[[nn.Module, int], Any],
    steps: int | Sequence[float],
    config: MagnitudePruning | None = None,
    *,
    spacing: Spacing = "geometric",
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[dict[str, Any]]:
    """Han et al. (2015) prune → retrain loop: ``len(steps)`` rounds ending at ``config``'s targets.

    Args:
        model: modified in place; ends with masks attached (call :func:`make_permanent` after).
        train_fn: ``train_fn(model, round_index) -> metrics or None``; it must keep pruned weights
            at zero, e.g. ``fit(model, ..., callbacks=[MaskCallback()])``.
        steps: number of rounds, or progress fractions (see :func:`schedules.iterative`).
        config: the final targets (default ``MagnitudePruning(sparsity=0.9)``).
        spacing: ``"geometric"`` prunes the same fraction of surviving weights each round.
        filter_fn: restricts the layers considered.

    Returns:
        One dict per round: ``{"round", "sparsity", "summary", "metrics"}``.

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 8))
        >>> log = prune_iteratively(m, lambda model, k: None, 2, MagnitudePruning(sparsity=0.75))
        >>> [r["sparsity"] for r in log]
        [0.5, 0.75]
    """
    config = config or MagnitudePruning(sparsity=0.9)
    log = []
    for k, progress in enumerate(progress_points(steps)):
        summary = _prune(model, scheduled_config(config, progress, spacing=spacing), filter_fn)
        metrics = train_fn(model, k)
        if apply_masks_(model):
            warnings.warn(
                "train_fn changed pruned weights; they were zeroed again. Pass MaskCallback() to "
                "nnshrink.train.fit (or call mask_gradients_/apply_masks_ in your loop).",
                stacklevel=2,
            )
        log.append(
            {"round": k, "sparsity": summary.sparsity, "summary": summary, "metrics": metrics}
        )
    return log


class MaskCallback(Callback):
    """Keep pruned weights exactly zero during :func:`nnshrink.train.fit`.

    Zeroes masked gradients after ``backward`` and re-applies the masks after each optimizer step.

    Example:
        >>> fit(model, loader, epochs=2, callbacks=[MaskCallback()])  # doctest: +SKIP
    """

    def on_after_backward(self, model: nn.Module) -> None:
        mask_gradients_(model)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        apply_masks_(model)


class AGPCallback(MaskCallback):
    """Gradual pruning during training along the AGP cubic schedule (Zhu & Gupta 2017).

    Every ``frequency`` optimizer steps from ``start_step`` it prunes to
    ``schedules.agp(t, final=config target, ...)`` — each per-layer target follows its own curve —
    and between pruning events it keeps the masks applied like :class:`MaskCallback`. Steps are
    counted by :func:`nnshrink.train.fit` from the start of the run (a resumed run continues).

    Args:
        config: the final targets.
        start_step: ``t0``, the optimizer step of the first pruning event.
        n_steps: ``n``, pruning events after ``t0``; the final sparsity holds from ``t0 + n * dt``.
        frequency: ``dt`` in optimizer steps.
        initial: ``s_i``.
        filter_fn: restricts the layers considered.

    Example:
        >>> cb = AGPCallback(MagnitudePruning(sparsity=0.9), n_steps=10, frequency=100)
        >>> fit(model, loader, epochs=5, callbacks=[cb])  # doctest: +SKIP
    """

    def __init__(
        self,
        config: MagnitudePruning,
        *,
        start_step: int = 0,
        n_steps: int = 10,
        frequency: int = 100,
        initial: float = 0.0,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> None:
        self.config = config
        self.start_step, self.n_steps, self.frequency = start_step, n_steps, frequency
        self.initial = initial
        self.filter_fn = filter_fn
        self.history: list[tuple[int, float]] = []
        # fail now, not thousands of steps into training, on bad schedule arguments
        agp(0, final=config.sparsity, initial=initial, n_steps=n_steps, frequency=frequency)

    def target_config(self, step: int) -> MagnitudePruning:
        """The config AGP asks for at optimizer step ``step``."""

        def at(final: float) -> float:
            return agp(
                step,
                final=final,
                initial=min(self.initial, final),
                start_step=self.start_step,
                n_steps=self.n_steps,
                frequency=self.frequency,
            )

        return _scaled(self.config, at)

    def prune_now(self, model: nn.Module, step: int) -> PruningSummary:
        summary = _prune(model, self.target_config(step), self.filter_fn)
        self.history.append((step, summary.sparsity))
        return summary

    def on_train_begin(self, model: nn.Module, optimizer: Any) -> None:
        if self.start_step == 0:
            self.prune_now(model, 0)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        t = step + 1  # fit passes the 0-based index of the step just taken; t counts steps done
        last = self.start_step + self.n_steps * self.frequency
        if self.start_step <= t <= last and (t - self.start_step) % self.frequency == 0:
            self.prune_now(model, t)
        else:
            apply_masks_(model)


__all__ = [
    "LAYER_TYPES",
    "MASK_SUFFIX",
    "AGPCallback",
    "MagnitudePruning",
    "MaskCallback",
    "PruningSummary",
    "TensorSparsity",
    "apply_masks_",
    "attach_mask",
    "get_masks",
    "global_masks",
    "iter_masks",
    "magnitude_scores",
    "make_permanent",
    "mask_from_scores",
    "mask_gradients_",
    "masks_from_zeros",
    "check_targets",
    "prune_iteratively",
    "random_scores",
    "resolve_target",
    "scheduled_config",
]

# ``prune_`` is the deprecated spelling of ``compress_(model, MagnitudePruning(...))``.
__getattr__ = module_getattr(__name__)
