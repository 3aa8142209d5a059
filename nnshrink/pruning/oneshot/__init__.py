"""One-shot LLM-era pruning from calibration data: Wanda and SparseGPT, unstructured or N:M.

``compress_(model, Wanda(sparsity=0.5), example_inputs=batches)`` or
``compress_(model, SparseGPT(pattern="2:4"), example_inputs=batches)``. Both zero weights in
place and attach the usual pruning masks, so fine-tuning with ``MaskCallback`` keeps the zeros
and ``nnshrink.finalize`` makes them permanent; ``nnshrink.storage`` stores N:M weights compactly.
"""

from .base import LayerJob, LayerResult, OneShotPruning, OneShotSummary, plan_jobs, prune_layers
from .calibration import StopForward, calibration_batches, forward_order, run_batches
from .layers import input_rows, is_candidate, unsupported_reason
from .sparsegpt import Hessian, SparseGPT, relative_output_error, sparsegpt_prune
from .wanda import InputNorms, Wanda, wanda_mask, wanda_scores

__all__ = [
    "Hessian",
    "InputNorms",
    "LayerJob",
    "LayerResult",
    "OneShotPruning",
    "OneShotSummary",
    "SparseGPT",
    "StopForward",
    "Wanda",
    "calibration_batches",
    "forward_order",
    "input_rows",
    "is_candidate",
    "plan_jobs",
    "prune_layers",
    "relative_output_error",
    "run_batches",
    "sparsegpt_prune",
    "unsupported_reason",
    "wanda_mask",
    "wanda_scores",
]
