"""The recipes the advisor runs and writes: one per candidate run, naming what can be named.

A recipe names the model (the baseline's snapshot checkpoint), the data and the metric when they
came by reference; what came as a Python object cannot be named, and the recipe's header says
how to run it then (``run_recipe(recipe, out, model=..., data=...)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .budget import Budget
from .candidates import Candidate

BASELINE_FILE = "baseline.safetensors"


def candidate_recipe(
    candidate: Candidate,
    *,
    data: Mapping[str, Any] | None,
    seed: int,
    budget: Budget,
    latency: bool,
    train_limit: int | None = None,
    model: Mapping[str, Any] | str | None = BASELINE_FILE,
    references: Mapping[str, str] | None = None,
    device: str | None = None,
    amp: str | None = None,
) -> dict[str, Any]:
    """The recipe (a dict, as YAML would load it) that runs ``candidate`` from the baseline.

    Args:
        candidate: the pipeline.
        data: the recipe ``data:`` mapping (``None`` values are left out), or ``None`` when the
            data are Python objects (the recipe then needs ``run_recipe(data=...)``).
        seed: recipe seed.
        budget: latency settings go into ``measure``.
        latency: measure latency at every stage of the run report.
        train_limit: training samples of the recovery stages, set in ``data`` (``None``: as
            ``data`` says).
        model: the recipe ``model:`` mapping, or a checkpoint path (relative to the recipe's
            folder or absolute), or ``None`` (then ``run_recipe(model=...)``).
        references: ``metric`` / ``loss`` references of the user's task.
        device: the recipe's device (``None``: the runner's default).
        amp: mixed precision of the training stages.

    Example:
        >>> src = candidate_recipe(cand, data={"name": "mnist"}, seed=0, budget=b,
        ...                        latency=False)  # doctest: +SKIP
    """
    source: dict[str, Any] = {"name": f"advise-{candidate.name}"}
    if model is not None:
        source["model"] = {"checkpoint": model} if isinstance(model, str) else dict(model)
    if data is not None:
        data = {**data, **({"train_limit": train_limit} if train_limit is not None else {})}
        source["data"] = {k: v for k, v in data.items() if v is not None}
    source.update(dict(references or {}))
    if device is not None:
        source["device"] = device
    if amp is not None:
        source["amp"] = amp
    source.update(
        seed=seed,
        measure={"latency": latency, "threads": budget.threads, "batch_size": budget.batch_size,
                 "runs": 20},
        stages=[dict(s) for s in candidate.stages],
    )  # fmt: skip
    return source


def data_note(data: Any) -> str:
    """One line for the recipe header: what its ``data:`` reproduces (an
    :class:`~nnshrink.advise.inputs.AdviceData`)."""
    if data.spec is None:
        return ("data: Python objects; run with run_recipe(recipe, out, data=...) and the same "
                f"loaders. The search selected on {data.note}")  # fmt: skip
    if not data.exact:
        return (f"data: the search trained without, and selected on, {data.note}; no recipe key "
                "holds that part back, so this recipe trains on all the training data and "
                "reports on test")  # fmt: skip
    return f"data: as the search used it; selection on {data.note}"
