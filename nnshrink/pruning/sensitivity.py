"""Layer sensitivity analysis: prune one layer at a time, measure accuracy, pick per-layer ratios.

Li et al. (2017) and Han et al. (2015) both choose per-layer pruning ratios from such a scan: a
layer whose accuracy holds at 90 % sparsity can take it; a fragile one (often the first conv or the
classifier) is pruned little or not at all.

Example:
    >>> import nnshrink as ns
    >>> from nnshrink.pruning.sensitivity import layer_sensitivity
    >>> model = ns.models.create("lenet300")
    >>> x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    >>> acc = lambda m: float((m(x).argmax(1) == y).float().mean())
    >>> result = layer_sensitivity(model, acc, ratios=(0.5, 0.9))
    >>> sorted(result.scores)
    ['1', '3', '5']
    >>> cfg = result.to_config(tolerance=1.0)  # anything goes: every layer at 90 %
    >>> cfg.per_layer["1"]
    0.9
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .unstructured import LAYER_TYPES, MagnitudePruning, magnitude_scores, mask_from_scores

EvalFn = Callable[[nn.Module], float]
UNSTRUCTURED_METHODS = ("magnitude", "random")
STRUCTURED_METHODS = ("l1", "l2", "bn_scale", "taylor", "fpgm", "random")
DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class SensitivityResult:
    """Accuracy of the model with one layer pruned, for every (layer, ratio) pair.

    Attributes:
        baseline: the metric of the unpruned model.
        ratios: the pruning ratios scanned (sparsity, or fraction of channels when structured).
        scores: ``{layer name: (metric at ratios[0], metric at ratios[1], ...)}``.
        method: the criterion used (``"magnitude"``, ``"l1"``, ...).
        structured: whether channels (not single weights) were removed.
        higher_is_better: the metric's direction.
    """

    baseline: float
    ratios: tuple[float, ...]
    scores: dict[str, tuple[float, ...]]
    method: str = "magnitude"
    structured: bool = False
    higher_is_better: bool = True

    def drops(self) -> dict[str, tuple[float, ...]]:
        """How much worse each trial is than the baseline, in the metric's units (positive =
        worse; ``baseline - score`` when higher is better, ``score - baseline`` otherwise)."""
        sign = 1.0 if self.higher_is_better else -1.0
        return {
            k: tuple(sign * (self.baseline - s) + 0.0 for s in v) for k, v in self.scores.items()
        }

    def derive_ratios(self, tolerance: float, *, contiguous: bool = True) -> dict[str, float]:
        """Per layer, the largest scanned ratio whose drop is ``<= tolerance`` (0.0 if none).

        Args:
            tolerance: allowed drop in the metric's units (0.01 = one point of top-1 as a fraction).
            contiguous: also require every smaller ratio to pass, so one lucky high ratio after a
                failing lower one (noise) is not chosen.
        """
        out = {}
        order = sorted(range(len(self.ratios)), key=lambda i: self.ratios[i])
        for layer, drops in self.drops().items():
            best = 0.0
            for i in order:
                # 1e-9: a drop of exactly `tolerance` must pass despite float rounding
                ok = not math.isnan(drops[i]) and drops[i] <= tolerance + 1e-9
                if ok:
                    best = max(best, self.ratios[i])
                elif contiguous:
                    break
            out[layer] = best
        return out

    def to_config(self, tolerance: float, **kwargs: Any) -> MagnitudePruning:
        """A :class:`MagnitudePruning` with the derived per-layer sparsities (others left dense).

        Only for unstructured scans; for structured ones pass :meth:`derive_ratios` to your pruner.
        """
        if self.structured:
            raise ValueError(
                "to_config builds an unstructured MagnitudePruning; for a structured scan use "
                "derive_ratios() and pass the ratios to StructuredPruning"
            )
        ratios = self.derive_ratios(tolerance)
        kwargs.setdefault("sparsity", 0.0)
        kwargs.setdefault("criterion", self.method)
        return MagnitudePruning(per_layer={re.escape(k): v for k, v in ratios.items()}, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "ratios": list(self.ratios),
            "scores": {k: list(v) for k, v in self.scores.items()},
            "method": self.method,
            "structured": self.structured,
            "higher_is_better": self.higher_is_better,
        }

    def to_markdown(self) -> str:
        """Rows: layers; columns: ratios; cells: the metric (as % when it is a fraction)."""
        pct = all(0.0 <= s <= 1.0 for v in self.scores.values() for s in v if not math.isnan(s))

        def fmt(v: float) -> str:
            return "n/a" if math.isnan(v) else (f"{100 * v:.2f}" if pct else f"{v:.4g}")

        head = "| layer | " + " | ".join(f"{r:g}" for r in self.ratios) + " |"
        lines = [head, "|---|" + "---:|" * len(self.ratios)]
        lines.append("| (dense) | " + " | ".join(fmt(self.baseline) for _ in self.ratios) + " |")
        for layer, values in self.scores.items():
            lines.append(f"| {layer} | " + " | ".join(fmt(v) for v in values) + " |")
        return "\n".join(lines)

    def plot(
        self, path: str | os.PathLike, *, title: str | None = None, ylabel: str = "metric"
    ) -> None:
        """Save a PNG: one line per layer, metric against ratio, dense baseline dashed."""
        # The object API with the Agg canvas never touches pyplot's global backend or state.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for layer, values in self.scores.items():
            ax.plot(self.ratios, values, marker="o", label=layer)
        ax.axhline(self.baseline, color="black", linestyle="--", linewidth=1, label="dense")
        kind = "channels removed" if self.structured else "weights pruned (sparsity)"
        ax.set_xlabel(f"fraction of {kind}")
        ax.set_ylabel(ylabel)
        ax.set_title(title or f"Layer sensitivity ({self.method})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small", ncol=2 if len(self.scores) > 8 else 1)
        fig.tight_layout()
        fig.savefig(os.fspath(path), format="png", dpi=120)


def layer_sensitivity(
    model: nn.Module,
    evaluate: EvalFn | Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    method: str = "magnitude",
    structured: bool = False,
    layer_types: Sequence[str] = ("conv", "linear"),
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    example_inputs: Any = None,
    seed: int = 0,
    task: Any = None,
) -> SensitivityResult:
    """Prune each layer alone at each ratio and evaluate; ``model`` is left unchanged.

    The scan is :func:`nnshrink.core.scan_layers` with a pruning edit
    (:func:`unstructured_edit` / :func:`structured_edit`).

    Args:
        model: a trained model.
        evaluate: ``fn(model) -> float`` (higher is better), or a loader of ``(x, y)`` batches
            scored by ``task`` (default: top-1 with :func:`nnshrink.train.evaluate`).
        ratios: sparsities (unstructured) or channel fractions (structured) to try.
        method: unstructured ``"magnitude"``/``"random"``; structured ``"l1"``, ``"l2"``,
            ``"bn_scale"``, ``"taylor"``, ``"fpgm"``, ``"random"`` (needs ``structured=True``).
        structured: remove whole output channels with :class:`StructuredPruning` instead.
        layer_types: layer types to scan (``"conv"``, ``"linear"``).
        filter_fn: ``(module, name) -> bool`` restricting the layers scanned.
        example_inputs: needed for structured scans (the dependency graph is traced).
        seed: for ``method="random"``.
        task: a :class:`~nnshrink.train.task.Task` scoring a loader ``evaluate`` with the user's
            metric (its headline and direction: drops are signed by it).

    Example:
        >>> res = layer_sensitivity(model, val_loader, ratios=(0.5, 0.9))  # doctest: +SKIP
        >>> res.derive_ratios(tolerance=0.01)  # doctest: +SKIP
    """
    from ..core.sensitivity import scan_layers

    ratios = tuple(float(r) for r in ratios)
    if not ratios or not all(0.0 <= r < 1.0 for r in ratios):
        raise ValueError(f"ratios must be a non-empty list of values in [0, 1), got {ratios}")
    allowed = STRUCTURED_METHODS if structured else UNSTRUCTURED_METHODS
    if method not in allowed:
        kind = "structured" if structured else "unstructured"
        raise ValueError(
            f"method {method!r} is not available for {kind} sensitivity; "
            f"choose from {list(allowed)}"
            + ("" if structured else " (or pass structured=True for channel criteria)")
        )
    types = tuple(t for k in layer_types for t in LAYER_TYPES[k])
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, types) and (filter_fn is None or filter_fn(m, name))
    ]
    if not layers:
        raise ValueError(f"no {list(layer_types)} layer to analyse in {type(model).__name__}")
    score, direction = _as_score(evaluate, task)
    if structured:
        edit = structured_edit(model, method, example_inputs, tuple(type(m) for _, m in layers),
                               seed=seed)  # fmt: skip
    else:
        edit = unstructured_edit(method, seed=seed)
    scan = scan_layers(model, edit, ratios, score=score, layers=[n for n, _ in layers],
                       higher_is_better=direction, restore="copy" if structured else "state")  # fmt: skip
    scores = scan.scores
    if structured:
        # layers whose channels cannot change alone (the model output, residual-coupled convs
        # whose partners are held fixed) are left out when no positive ratio changed them
        scores = {n: row for n, row in scores.items()
                  if not all(math.isnan(v) for r, v in zip(ratios, row) if r > 0)
                  or not any(r > 0 for r in ratios)}  # fmt: skip
    return SensitivityResult(scan.baseline, ratios, scores, method, structured,
                             scan.higher_is_better)  # fmt: skip


def _as_score(evaluate: EvalFn | Iterable[Any], task: Any):
    """``(score function, direction)`` of ``evaluate``: a callable, or a loader scored by
    ``task`` (default top-1)."""
    if callable(evaluate):
        if task is not None:
            raise ValueError("task= scores a loader; with a scoring function, leave task out")
        return evaluate, True
    from ..core.sensitivity import task_score
    from ..train.task import Task

    task = task if task is not None else Task()
    return task_score(task, evaluate), lambda: task.higher_is_better


def unstructured_edit(method: str = "magnitude", *, seed: int = 0):
    """The scan edit that zeroes a fraction of one layer's weights (by magnitude, or at random).

    Scores come from the layer's weights as they were first seen (the unedited ones: the scan
    restores them between trials); random scores are drawn once per layer, in scan order.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4))
        >>> unstructured_edit()(m, "0", 0.5); float((m[0].weight == 0).float().mean())
        0.5
    """
    generator = torch.Generator().manual_seed(seed)
    cache: dict[str, torch.Tensor] = {}

    def edit(model: nn.Module, name: str, ratio: float) -> None:
        weight = model.get_submodule(name).weight
        if name not in cache:
            w = weight.detach().clone()
            cache[name] = (magnitude_scores(w) if method == "magnitude"
                           else torch.rand(w.shape, generator=generator))  # fmt: skip
        mask = mask_from_scores(cache[name], ratio).to(weight.device)
        with torch.no_grad():
            weight.mul_(mask.to(weight.dtype))

    return edit


def structured_edit(
    model: nn.Module,
    method: str,
    example_inputs: Any,
    scanned_types: tuple[type, ...] = (nn.Conv2d, nn.Linear),
    *,
    seed: int = 0,
):
    """The scan edit that removes a fraction of one layer's output channels (structured pruning
    of that layer alone; BN and the next layer's inputs follow it). It reports "no change"
    when the layer's channels cannot change alone (the scan then reads NaN).

    Args:
        model: the model to be scanned (its parameter count is the "unchanged" reference).
        method: the channel criterion (``"l1"``, ``"l2"``, ``"bn_scale"``, ``"fpgm"``,
            ``"random"``; not ``"taylor"``, which needs gradients from a batch).
        example_inputs: traced to find the coupled layers.
        scanned_types: layer types held fixed except the one being edited.
        seed: for ``"random"``.
    """
    from nnshrink.core import compress_
    from nnshrink.metrics import count_params

    from .structured import StructuredPruning

    if example_inputs is None:
        raise ValueError("structured sensitivity traces the model: pass example_inputs")
    if method == "taylor":
        raise ValueError(
            "structured sensitivity does not support 'taylor' (it needs gradients from a batch); "
            "use l1, l2, bn_scale, fpgm or random"
        )
    dense_params = count_params(model)

    def edit(trial: nn.Module, name: str, ratio: float) -> bool:
        # Only the scanned layer's outputs may shrink; BN and the next layer's inputs follow it.
        def only(module: nn.Module, qualname: str) -> bool:
            return qualname == name or not isinstance(module, scanned_types)

        # strict=False: a layer that cannot shrink alone prunes nothing (reported as not edited)
        cfg = StructuredPruning(sparsity=ratio, criterion=method, seed=seed, strict=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            compress_(trial, cfg, example_inputs=example_inputs, filter_fn=only)
        return ratio == 0 or count_params(trial) != dense_params

    return edit
