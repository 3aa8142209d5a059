"""What "better" means for the user's model: the metric, its headline value and direction, the loss.

Classification is the default (top-1, higher is better, cross-entropy). Any other task names its
metric ``(model, loader) -> dict`` and, for training, its loss; reports, ``advise --max-drop``
(a drop in the metric's own units, signed by its direction) and recipes all read the headline
through :class:`Task`.

A metric declares its headline and direction either as attributes of the callable
(``metric.headline = "mse"; metric.higher_is_better = False``) or as keys of the dict it returns
(``{"mse": 0.12, "headline": "mse", "higher_is_better": False}``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> def mse(model, loader):
    ...     errs = [float(((model(x) - y) ** 2).mean()) for x, y in loader]
    ...     return {"mse": sum(errs) / len(errs), "headline": "mse", "higher_is_better": False}
    >>> task = Task(metric=mse)
    >>> model, data = nn.Linear(2, 1), [(torch.ones(4, 2), torch.zeros(4, 1))]
    >>> result = task.evaluate(model, data)
    >>> task.headline, task.higher_is_better, task.drop({"mse": 0.5}, {"mse": 0.75})
    ('mse', False, 0.25)
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..utils.references import ReferenceError_, import_reference
from .evaluate import Criterion, evaluate

Metric = Callable[[nn.Module, Iterable[Any]], dict[str, Any]]


@dataclasses.dataclass
class Task:
    """A metric (default: classification top-1) and a training loss (default: cross-entropy).

    Args:
        metric: ``(model, loader) -> dict``; ``None`` means :func:`nnshrink.train.evaluate`.
        headline: the key of the value reports and budgets compare.
        higher_is_better: the headline's direction.
        criterion: ``(model, x, y) -> (loss, outputs)`` for training; ``None``: cross-entropy.
        name: a label for reports (the metric reference).
    """

    metric: Metric | None = None
    headline: str = "top1"
    higher_is_better: bool = True
    criterion: Criterion | None = None
    name: str = "classification"

    def __post_init__(self) -> None:
        if self.metric is not None:
            self.headline = getattr(self.metric, "headline", self.headline)
            self.higher_is_better = bool(
                getattr(self.metric, "higher_is_better", self.higher_is_better)
            )
            if self.name == "classification":
                self.name = getattr(self.metric, "__name__", "metric")

    @property
    def is_classification(self) -> bool:
        """True when the default top-1 metric is used."""
        return self.metric is None

    def evaluate(self, model: nn.Module, loader: Iterable[Any]) -> dict[str, Any]:
        """Run the metric (model in eval mode, no grad); the result holds the headline key."""
        if self.metric is None:
            return evaluate(model, loader, self.criterion)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = dict(self.metric(model, loader))
        finally:
            model.train(was_training)
        self.headline = str(out.pop("headline", self.headline))
        if "higher_is_better" in out:
            self.higher_is_better = bool(out.pop("higher_is_better"))
        if self.headline not in out:
            raise ValueError(
                f"metric {self.name!r} returned {sorted(out)} without its headline key "
                f"{self.headline!r}; return it, or set headline= on the metric"
            )
        return out

    def score(self, results: dict[str, Any]) -> float:
        """The headline value of a result dict."""
        return float(results[self.headline])

    def drop(self, before: dict[str, Any], after: dict[str, Any]) -> float:
        """How much worse ``after`` is, in the headline's own units (negative: it improved)."""
        delta = self.score(after) - self.score(before)
        return -delta if self.higher_is_better else delta


def loss_criterion(loss: Callable[..., Any]) -> Criterion:
    """Turn ``loss(outputs, targets)`` (or an ``nn.Module`` loss) into ``(model, x, y) -> (loss, out)``.

    Example:
        >>> crit = loss_criterion(nn.MSELoss())
        >>> value, out = crit(nn.Identity(), torch.ones(2), torch.zeros(2)); float(value)
        1.0
    """

    def criterion(model: nn.Module, x: Any, y: Any):
        out = model(x)
        return loss(out, y), out

    return criterion


def task_from_references(metric: str | None = None, loss: str | None = None) -> Task:
    """A :class:`Task` from ``"package.module:callable"`` references (CLI ``--metric``/``--loss``).

    ``loss`` may name a function ``(outputs, targets) -> loss``, a criterion
    ``(model, x, y) -> (loss, outputs)`` (three parameters), or a loss class such as
    ``torch.nn:MSELoss`` (instantiated without arguments).
    """
    task = Task()
    if metric is not None:
        fn = import_reference(metric, "metric")
        if not callable(fn):
            raise ReferenceError_(f"metric {metric!r} is not callable; it takes (model, loader)")
        task = Task(metric=fn, name=metric)
    if loss is not None:
        obj = import_reference(loss, "loss")
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            obj = obj()
        if not callable(obj):
            raise ReferenceError_(f"loss {loss!r} is not callable")
        task.criterion = obj if _arity(obj) == 3 else loss_criterion(obj)
    return task


def _arity(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 2
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
