"""One per-layer sensitivity scan: edit one layer of a copy at several settings, score each trial.

Every sensitivity table in nnshrink is this loop: for each layer, for each setting (a sparsity, a
bit width, a channel fraction, a rank), apply an edit to that layer alone on a copy of the model,
score the copy with the task's metric, and record the score (and, if asked, something else about
the edited copy, such as its MACs). The pruning scan (:func:`nnshrink.pruning.layer_sensitivity`),
the advisor's tables (:func:`nnshrink.advise.measure_sensitivity`) and mixed precision differ
only in their edits.

The caller's model is never touched: the scan works on one private copy. Edits that change a
layer's tensors in place are undone by restoring that layer's ``state_dict`` after each trial
(``restore="state"``, cheap); edits that change structure (slice channels, replace modules) get a
fresh copy per trial (``restore="copy"``).

This module imports no technique family: families import it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x = torch.randn(16, 4)
    >>> ref = model(x).detach()
    >>> def zero_fraction(m, name, fraction):  # the edit: zero the first rows of one layer
    ...     w = m.get_submodule(name).weight
    ...     with torch.no_grad():
    ...         w[: int(fraction * w.shape[0])] = 0
    >>> def error(m):  # a score where lower is better
    ...     return (m(x) - ref).pow(2).mean().item()
    >>> scan = scan_layers(model, zero_fraction, (0.0, 0.5), score=error, higher_is_better=False)
    >>> scan.scores["0"][0] == 0.0 and scan.drops()["0"][1] > 0
    True
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from .modules import eval_mode

#: ``edit(model_copy, layer_name, setting)``: change that layer of the copy; return ``False``
#: when the setting changes nothing there (the trial is then not scored and reads NaN).
Edit = Callable[[nn.Module, str, Any], "bool | None"]
Score = Callable[[nn.Module], float]
SCAN_TYPES = (nn.Conv2d, nn.Linear)


@dataclasses.dataclass(frozen=True)
class LayerScan:
    """The scores of every (layer, setting) trial of :func:`scan_layers`.

    Attributes:
        baseline: the score of the unedited model.
        settings: the settings tried, in order.
        scores: ``{layer: (score at settings[0], ...)}``; NaN where the edit changed nothing.
        higher_is_better: the score's direction (drops are signed by it).
        extras: ``{layer: (record(copy) at settings[0], ...)}`` when a ``record`` was given
            (``None`` where the score is NaN).
        seconds: wall time of the scan.
    """

    baseline: float
    settings: tuple[Any, ...]
    scores: dict[str, tuple[float, ...]]
    higher_is_better: bool = True
    extras: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def drops(self) -> dict[str, tuple[float, ...]]:
        """How much worse each trial is than the baseline, in the score's units (positive =
        worse, whatever the direction); NaN stays NaN."""
        sign = 1.0 if self.higher_is_better else -1.0
        # + 0.0: an unchanged score reads 0.0, not -0.0, when lower is better
        return {
            k: tuple(sign * (self.baseline - s) + 0.0 for s in v) for k, v in self.scores.items()
        }

    def table(self, layer: str) -> dict[Any, float]:
        """``{setting: drop}`` of one layer, without the settings that changed nothing."""
        row = self.drops()[layer]
        return {s: d for s, d in zip(self.settings, row) if not math.isnan(d)}


def conv_linear_layers(model: nn.Module) -> list[str]:
    """Names of the model's ``nn.Conv2d`` / ``nn.Linear`` layers (subclasses too), in order.

    Example:
        >>> conv_linear_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(2, 2)))
        ['0', '2']
    """
    return [n for n, m in model.named_modules() if n and isinstance(m, SCAN_TYPES)]


class ReplayBatches:
    """Batches read once and replayed, so every trial sees the same samples; to a metric it
    looks like a ``DataLoader``: iterate it, ``len()`` counts batches, ``.dataset`` holds the
    samples (a ``TensorDataset`` when the batches are tensor pairs) and ``.batch_size``.

    A user's metric may read ``len(loader.dataset)``; a plain list of batches would break it.

    Args:
        loader: any iterable of batches (read once, now).

    Example:
        >>> data = ReplayBatches([(torch.zeros(4, 2), torch.zeros(4)), (torch.ones(2, 2), torch.ones(2))])
        >>> len(data), len(data.dataset), data.batch_size
        (2, 6, 4)
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self.batches = list(loader)
        first = self.batches[0][0] if self.batches else None
        self.batch_size = getattr(loader, "batch_size", None) or (
            len(first) if hasattr(first, "__len__") else None
        )
        self._dataset: Any = None

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def dataset(self) -> Any:
        """The samples of all batches (built on first use)."""
        if self._dataset is None:
            from torch.utils.data import TensorDataset

            parts = list(zip(*self.batches)) if self.batches else []
            if parts and all(isinstance(t, torch.Tensor) for part in parts for t in part):
                self._dataset = TensorDataset(*(torch.cat(part) for part in parts))
            else:  # batches of other kinds: one entry per sample of the first field
                self._dataset = [s for batch in self.batches for s in zip(*batch)]
        return self._dataset


def task_score(task: Any, loader: Iterable[Any]) -> Score:
    """``model -> headline value`` of a :class:`~nnshrink.train.task.Task` on ``loader``.

    The batches are read once into a list, so every trial sees the same samples.

    Example:
        >>> from nnshrink.train.task import Task
        >>> data = [(torch.randn(8, 4), torch.randint(0, 2, (8,)))]
        >>> 0.0 <= task_score(Task(), data)(nn.Linear(4, 2)) <= 1.0
        True
    """
    batches = ReplayBatches(loader)

    def score(model: nn.Module) -> float:
        return float(task.score(task.evaluate(model, batches)))

    return score


def scan_layers(
    model: nn.Module,
    edit: Edit,
    settings: Sequence[Any],
    *,
    score: Score,
    layers: Sequence[str] | None = None,
    higher_is_better: bool | Callable[[], bool] = True,
    restore: Literal["state", "copy"] = "state",
    record: Callable[[nn.Module], Any] | None = None,
) -> LayerScan:
    """Edit each layer alone at each setting on a copy of ``model`` and score every trial.

    Args:
        model: the trained model (never modified).
        edit: ``edit(copy, layer, setting)`` applies the setting to that layer of the copy; it
            returns ``False`` when nothing changed (that trial reads NaN and is not scored).
        settings: the settings to try, in order.
        score: ``model -> float``; :func:`task_score` builds it from a Task and a loader.
        layers: qualified names to scan (default: every Conv2d / Linear layer).
        higher_is_better: the score's direction, or a function returning it, called after the
            baseline is scored (a :class:`~nnshrink.train.task.Task` learns the direction of a
            user metric from its first result).
        restore: ``"state"``: one copy, each edited layer's ``state_dict`` restored after each
            trial (for edits of tensors in place); ``"copy"``: a fresh copy per trial (for
            edits that change structure).
        record: ``copy -> value`` called on each scored trial (e.g. its MACs); see ``extras``.

    Returns:
        A :class:`LayerScan`.

    Example:
        >>> m = nn.Sequential(nn.Linear(3, 3))
        >>> def halve(c, name, s):
        ...     c.get_submodule(name).weight.data.mul_(s)
        >>> scan = scan_layers(m, halve, (1.0, 0.0), score=lambda c: float(c[0].weight.any()))
        >>> scan.baseline, scan.scores
        (1.0, {'0': (1.0, 0.0)})
    """
    if restore not in ("state", "copy"):
        raise ValueError(f"restore must be 'state' or 'copy', got {restore!r}")
    t0 = time.monotonic()
    settings = tuple(settings)
    work = copy.deepcopy(model)
    names = list(conv_linear_layers(work) if layers is None else layers)
    scores: dict[str, tuple[float, ...]] = {}
    extras: dict[str, tuple[Any, ...]] = {}
    with eval_mode(work):
        baseline = float(score(work))
        direction = higher_is_better() if callable(higher_is_better) else higher_is_better
        for name in names:
            row: list[float] = []
            seen: list[Any] = []
            for setting in settings:
                if restore == "copy":
                    trial = copy.deepcopy(work).eval()
                    value, extra = _trial(trial, edit, name, setting, score, record)
                else:
                    value, extra = _in_place_trial(work, edit, name, setting, score, record)
                row.append(value)
                seen.append(extra)
            scores[name] = tuple(row)
            if record is not None:
                extras[name] = tuple(seen)
    return LayerScan(baseline, settings, scores, bool(direction), extras, time.monotonic() - t0)


def _trial(trial, edit, name, setting, score, record) -> tuple[float, Any]:
    if edit(trial, name, setting) is False:
        return math.nan, None
    value = float(score(trial))
    return value, (record(trial) if record is not None else None)


def _in_place_trial(work, edit, name, setting, score, record) -> tuple[float, Any]:
    module = work.get_submodule(name)
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    try:
        result = _trial(work, edit, name, setting, score, record)
        if work.get_submodule(name) is not module:
            raise ValueError(
                f"the edit replaced module {name!r}; scan structural edits with restore='copy'"
            )
        return result
    finally:
        _restore(module, saved)


def _restore(module: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    """Put the saved tensors back bit for bit (same storage, so optimisers' views stay valid)."""
    current = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in saved.items():
            current[key].copy_(value)
