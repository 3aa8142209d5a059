"""``nnshrink advise``: choose compression methods for a budget (bytes, latency, MACs, accuracy).

Example:
    >>> from nnshrink.advise import Budget, advise, parse_size
    >>> res = advise("lenet5.safetensors", "mnist",
    ...              Budget(max_bytes=parse_size("20KB"), max_drop=0.3, time_limit_s=600),
    ...              out_dir="advice/lenet5")  # doctest: +SKIP
    >>> print(res.message)  # doctest: +SKIP
"""

from .advisor import AdviceResult, Screened, advise, candidate_recipe
from .allocation import allocate, sensitivity_candidates
from .budget import (
    Budget,
    BudgetError,
    Measurement,
    Violation,
    drop_points,
    excess,
    meets,
    parse_size,
    resource_ok,
    violations,
)
from .candidates import Candidate, ModelTraits, generate, interleave, model_traits
from .measure import (
    LayerTime,
    artifact_of,
    layer_latency_share,
    measure_model,
    measure_run,
    zero_shot,
)
from .report import pareto_indices, write_report
from .search import Evaluation, choose, judge, rung_limits, successive_halving
from .sensitivity import LayerSensitivity, Sensitivity, measure_sensitivity

__all__ = [
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
    "interleave",
    "judge",
    "layer_latency_share",
    "measure_model",
    "measure_run",
    "measure_sensitivity",
    "meets",
    "model_traits",
    "pareto_indices",
    "parse_size",
    "resource_ok",
    "rung_limits",
    "sensitivity_candidates",
    "successive_halving",
    "violations",
    "write_report",
    "zero_shot",
]
