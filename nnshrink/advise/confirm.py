"""The advisor's last step: re-time the chosen artifact beside the baseline before trusting it.

In the search each candidate keeps its lowest latency measured (noise only adds time), which
favours candidates against a limit set from fewer baseline measurements (a LeNet-5 choice at
0.050 ms against 0.054 ran at 0.56 of the baseline's time when re-timed). Here the deployable
artifact, loaded back from disk, and the baseline run in interleaved, shuffled rounds in one
process; the latency is their median ratio times the baseline's measured latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..metrics.latency import interleaved
from .budget import Budget, Measurement
from .measure import deployed_call
from .search import Evaluation, choose, judge

RETIME_ROUNDS, RETIME_RUNS = 10, 50  # interleaved rounds x calls per variant and round


Loader = Callable[[Evaluation], nn.Module]


def load_artifact(evaluation: Evaluation, budget: Budget, *, factory: Any = None) -> nn.Module:
    """The evaluation's deployable artifact, loaded back from disk as a runnable model.

    Args:
        evaluation: an evaluation with an ``artifact`` path (``.nns``, int8 ``.onnx`` or a
            checkpoint, as ``measurement.bytes_kind`` says).
        budget: its ``threads`` go to an int8 ONNX Runtime session.
        factory: the user's model factory (reference or callable) the file was saved from;
            it rebuilds the architecture without trusting the file.

    Example:
        >>> model = load_artifact(result.chosen, budget)  # doctest: +SKIP
    """
    path = Path(evaluation.artifact)
    if evaluation.measurement.bytes_kind == "int8-onnx":
        from ..quantization.backends.ort import OrtInt8Module

        return OrtInt8Module(path.read_bytes(), threads=budget.threads)
    from ..recipes.artifacts import load_model_file

    return load_model_file(path, factory=factory).cpu()


def retime(
    evaluation: Evaluation,
    baseline_model: nn.Module,
    baseline: Measurement,
    budget: Budget,
    example_inputs: Any,
    say: Callable[[str], None],
    *,
    load: Loader | None = None,
    higher_is_better: bool = True,
) -> Evaluation:
    """The evaluation with its latency re-timed beside the baseline, and judged again.

    Both run as the budget deploys them. ONNX Runtime sessions park their worker threads after
    each call (``stop_spinning``): otherwise the idle session's spinning workers take the cores
    from the one being timed.

    Args:
        evaluation: the candidate to re-time (its artifact is loaded from disk).
        baseline_model: the baseline model.
        baseline: the baseline's measurement; its ``latency_ms`` scales the ratio.
        budget: the budget (batch size, threads, runtime, limits).
        example_inputs: an input batch (the timed calls run ``budget.batch_size`` samples).
        say: a logger for one line.
        load: ``evaluation -> model`` (default :func:`load_artifact`).
        higher_is_better: the metric's direction (for judging again).

    Example:
        >>> confirmed = retime(e, model, base, budget, x, print)  # doctest: +SKIP
    """
    candidate = load(evaluation) if load is not None else load_artifact(evaluation, budget)
    calls = {
        "baseline": deployed_call(baseline_model, budget, example_inputs, stop_spinning=True),
        "candidate": deployed_call(candidate, budget, example_inputs, stop_spinning=True),
    }
    stats = interleaved(calls, rounds=RETIME_ROUNDS, runs=RETIME_RUNS)
    ratio = stats["candidate"]["median"] / stats["baseline"]["median"]
    m = dataclasses.replace(evaluation.measurement, latency_ms=ratio * baseline.latency_ms)
    say(
        f"re-timed {evaluation.label} beside the baseline: {ratio:.3f} of its time "
        f"({m.latency_ms:.3f} ms)"
    )
    return dataclasses.replace(
        evaluation, measurement=m, retimed_ratio=ratio,
        **judge(budget, m, baseline.score, higher_is_better),
    )  # fmt: skip


def confirm(
    evaluations: Sequence[Evaluation],
    baseline_model: nn.Module,
    baseline: Measurement,
    budget: Budget,
    example_inputs: Any,
    say: Callable[[str], None],
    *,
    load: Loader | None = None,
    higher_is_better: bool = True,
) -> list[Evaluation]:
    """Re-time the choice beside the baseline until one still meets the budget (or none is left).

    The closest candidate is re-timed too when nothing meets, so the report shows confirmed
    numbers either way. Each evaluation is re-timed at most once.

    Args:
        evaluations: the search's evaluations.
        baseline_model, baseline, budget, example_inputs, say, load, higher_is_better: as for
            :func:`retime`.

    Example:
        >>> evaluations = confirm(evaluations, model, base, budget, x, print)  # doctest: +SKIP
    """
    evaluations = list(evaluations)
    done: set[int] = set()
    while True:
        chosen, closest = choose(evaluations, higher_is_better)
        pick = chosen or closest
        if pick is None or id(pick) in done or pick.artifact is None:
            return evaluations
        confirmed = retime(pick, baseline_model, baseline, budget, example_inputs, say,
                           load=load, higher_is_better=higher_is_better)  # fmt: skip
        done.add(id(confirmed))
        evaluations[evaluations.index(pick)] = confirmed
