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
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nnshrink.core import Config, ConfigError, check_regexes, register_handler
from nnshrink.train import Callback

from .masks import (
    LAYER_TYPES,
    MASK_SUFFIX,
    apply_masks_,
    attach_mask,
    get_masks,
    global_masks,
    iter_masks,
    magnitude_scores,
    make_permanent,
    mask_from_scores,
    mask_gradients_,
    masks_from_zeros,
    random_scores,
)
from .schedules import Spacing, agp, at_progress, progress_points


@dataclasses.dataclass(frozen=True)
class MagnitudePruning(Config):
    """Unstructured pruning: zero the smallest-magnitude (or random) weights of conv/linear layers.

    Args:
        sparsity: fraction of weights to zero in every layer (``scope="layer"``) or over all chosen
            layers together (``scope="global"``; one threshold, so layers end up unequally sparse).
        scope: ``"layer"`` or ``"global"``.
        criterion: ``"magnitude"`` (|w|, Han et al. 2015) or ``"random"`` (a baseline).
        per_layer: ``{regex: sparsity}`` overriding ``sparsity`` for layers whose qualified name
            matches the regex in full (first match wins); such layers are pruned on their own.
        ignore: regexes of layer names to leave dense (e.g. ``("fc",)`` for a last layer).
        include_bias: also prune biases (off by default: they are few and matter).
        layer_types: which layer types to prune, from ``"conv"`` and ``"linear"``.
        seed: seed for ``criterion="random"``.

    Example:
        >>> import nnshrink as ns
        >>> model = ns.models.create("lenet300")
        >>> cfg = MagnitudePruning(sparsity=0.9, per_layer={"5": 0.7})  # "5" is the last Linear
        >>> summary = ns.compress_(model, cfg)
        >>> round(summary.sparsity, 2)
        0.9
    """

    kind: ClassVar[str] = "magnitude-pruning"

    sparsity: float = 0.5
    scope: Literal["layer", "global"] = "layer"
    criterion: Literal["magnitude", "random"] = "magnitude"
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    include_bias: bool = False
    layer_types: tuple[str, ...] = ("conv", "linear")
    seed: int = 0

    def validate(self) -> None:
        for name, value in [("sparsity", self.sparsity), *self.per_layer.items()]:
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"magnitude-pruning: sparsity for {name!r} must be in [0, 1)")
        if self.scope not in ("layer", "global"):
            raise ConfigError(
                f"magnitude-pruning: scope must be 'layer' or 'global', not {self.scope!r}"
            )
        if self.criterion not in ("magnitude", "random"):
            raise ConfigError(
                f"magnitude-pruning: criterion must be 'magnitude' or 'random', not "
                f"{self.criterion!r} (structured criteria live in StructuredPruning)"
            )
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown or not self.layer_types:
            raise ConfigError(
                f"magnitude-pruning: layer_types {list(self.layer_types)} invalid; "
                f"choose from {sorted(LAYER_TYPES)}"
            )
        check_regexes(self.kind, (*self.per_layer, *self.ignore))


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
    """What :func:`prune_` did: one row per pruned tensor plus totals over those tensors."""

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
    return prune_(model, config, filter_fn=filter_fn)


def prune_(
    model: nn.Module,
    config: MagnitudePruning,
    *,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> PruningSummary:
    """Zero weights of ``model`` in place per ``config`` and attach masks that keep them zero.

    Weights already masked stay pruned (they rank lowest), so calling this again with a higher
    sparsity continues an iterative schedule. Use ``compress_(model, config)`` for the same thing.

    Args:
        model: the model, modified in place.
        config: targets and criterion.
        filter_fn: ``(module, name) -> bool`` restricting the layers considered.

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 8))
        >>> prune_(m, MagnitudePruning(sparsity=0.25)).rows[0].nonzero
        48
    """
    tensors = _select_tensors(model, config, filter_fn)
    if not tensors:
        raise ValueError(
            f"no layer to prune: MagnitudePruning looks for {list(config.layer_types)} layers "
            f"({', '.join(t.__name__ for k in config.layer_types for t in LAYER_TYPES[k])}) "
            "not excluded by ignore/filter_fn"
        )
    generator = torch.Generator().manual_seed(config.seed)
    scores: dict[str, torch.Tensor] = {}
    for key, (module, pname, _) in tensors.items():
        param = getattr(module, pname).detach()
        if config.criterion == "magnitude":
            score = magnitude_scores(param)
        else:
            score = random_scores(param, generator)
        old = getattr(module, pname + MASK_SUFFIX, None)
        if old is not None:  # already pruned entries go first, so schedules only ever add zeros
            score = score.masked_fill(~old, float("-inf"))
        scores[key] = score

    targets = {key: target for key, (_, _, target) in tensors.items()}
    pooled = [k for k, t in targets.items() if t is None]
    new_masks: dict[str, torch.Tensor] = {}
    if pooled:
        if config.scope == "global":
            new_masks.update(global_masks({k: scores[k] for k in pooled}, config.sparsity))
        else:
            new_masks.update({k: mask_from_scores(scores[k], config.sparsity) for k in pooled})
    for key, target in targets.items():
        if target is not None:
            new_masks[key] = mask_from_scores(scores[key], target)

    rows = []
    for key, (module, pname, target) in tensors.items():
        mask = new_masks[key]
        old = getattr(module, pname + MASK_SUFFIX, None)
        if old is not None:
            mask = mask & old
        attach_mask(module, pname, mask)
        rows.append(
            TensorSparsity(
                key, mask.numel(), int(mask.sum()), config.sparsity if target is None else target
            )
        )
    return PruningSummary(tuple(rows))


def _select_tensors(
    model: nn.Module,
    config: MagnitudePruning,
    filter_fn: Callable[[nn.Module, str], bool] | None,
) -> dict[str, tuple[nn.Module, str, float | None]]:
    """``{"layer.weight": (module, "weight", per-layer target or None for the shared target)}``."""
    types = tuple(t for k in config.layer_types for t in LAYER_TYPES[k])
    out: dict[str, tuple[nn.Module, str, float | None]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, types):
            continue
        if any(re.fullmatch(p, name) for p in config.ignore):
            continue
        if filter_fn is not None and not filter_fn(module, name):
            continue
        target = next((s for p, s in config.per_layer.items() if re.fullmatch(p, name)), None)
        pnames = ["weight"] + (["bias"] if config.include_bias else [])
        for pname in pnames:
            if isinstance(getattr(module, pname, None), nn.Parameter):
                out[f"{name}.{pname}" if name else pname] = (module, pname, target)
    return out


def scheduled_config(
    config: MagnitudePruning, progress: float, *, spacing: Spacing = "geometric"
) -> MagnitudePruning:
    """``config`` with every target replaced by its value at ``progress`` of an iterative schedule.

    Example:
        >>> scheduled_config(MagnitudePruning(sparsity=0.75), 0.5).sparsity
        0.5
    """
    return dataclasses.replace(
        config,
        sparsity=at_progress(config.sparsity, progress, spacing=spacing),
        per_layer={
            p: at_progress(s, progress, spacing=spacing) for p, s in config.per_layer.items()
        },
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
        summary = prune_(
            model, scheduled_config(config, progress, spacing=spacing), filter_fn=filter_fn
        )
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

        cfg = self.config
        return dataclasses.replace(
            cfg, sparsity=at(cfg.sparsity), per_layer={p: at(s) for p, s in cfg.per_layer.items()}
        )

    def prune_now(self, model: nn.Module, step: int) -> PruningSummary:
        summary = prune_(model, self.target_config(step), filter_fn=self.filter_fn)
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
    "prune_",
    "prune_iteratively",
    "random_scores",
    "scheduled_config",
]
