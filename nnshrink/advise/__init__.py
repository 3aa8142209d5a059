"""``nnshrink advise``: choose compression methods for a budget (bytes, latency, MACs, a drop of
the metric), on the user's own model, data loaders and metric.

Example:
    >>> from nnshrink.advise import Budget, advise, parse_size
    >>> res = advise(my_model, (train_loader, test_loader, val_loader),
    ...              Budget(max_bytes=parse_size("20KB"), max_drop=0.003, time_limit_s=600),
    ...              out_dir="advice/mine")  # doctest: +SKIP
    >>> print(res.message)  # doctest: +SKIP
"""

from .advisor import AdviceResult, advise, candidate_recipe
from .allocation import allocate, sensitivity_candidates
from .budget import (
    Budget,
    BudgetError,
    Measurement,
    Violation,
    drop_points,
    excess,
    goodness,
    meets,
    metric_drop,
    parse_size,
    resource_ok,
    violations,
)
from .candidates import Candidate, ModelTraits, generate, interleave, model_traits
from .inputs import AdviceData, resolve_data, resolve_model, resolve_task
from .measure import (
    LayerTime,
    artifact_of,
    layer_latency_share,
    measure_model,
    measure_run,
    score_of,
    zero_shot,
)
from .report import pareto_indices, write_report
from .screen import Screened
from .search import Evaluation, choose, judge, rung_limits, successive_halving
from .sensitivity import LayerSensitivity, Sensitivity, measure_sensitivity

__all__ = [
    "AdviceData",
    "AdviceResult",
    "Budget",
    "BudgetError",
    "Candidate",
    "Evaluation",
    "LayerSensitivity",
    "LayerTime",
    "Measurement",
    "ModelTraits",
    "Screened",
    "Sensitivity",
    "Violation",
    "advise",
    "allocate",
    "artifact_of",
    "candidate_recipe",
    "choose",
    "drop_points",
    "excess",
    "generate",
    "goodness",
    "interleave",
    "judge",
    "layer_latency_share",
    "measure_model",
    "measure_run",
    "measure_sensitivity",
    "meets",
    "metric_drop",
    "model_traits",
    "pareto_indices",
    "resolve_data",
    "resolve_model",
    "resolve_task",
    "parse_size",
    "resource_ok",
    "rung_limits",
    "score_of",
    "sensitivity_candidates",
    "successive_halving",
    "violations",
    "write_report",
    "zero_shot",
]
