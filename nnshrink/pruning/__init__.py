"""Pruning: unstructured masks (magnitude, and one-shot Wanda / SparseGPT, unstructured or N:M),
structured (channel), depth and input-feature pruning, schedules, sensitivity analysis."""

from . import criteria, oneshot, schedules, select, structured
from .depth import BlockPruning, BlockPruningResult, residual_blocks
from .inputs import (
    GroupLassoCallback,
    InputPruning,
    InputPruningResult,
    SelectFeatures,
    group_lasso_penalty,
    input_layer,
)
from .oneshot import OneShotSummary, SparseGPT, Wanda
from .schedules import agp, iterative, one_shot
from .sensitivity import SensitivityResult, layer_sensitivity
from .structured import (
    BNSlimmingCallback,
    StructuredPruner,
    StructuredPruning,
    StructuredPruningSummary,
    bn_l1_penalty,
)
from .unstructured import (
    AGPCallback,
    MagnitudePruning,
    MaskCallback,
    PruningSummary,
    apply_masks_,
    get_masks,
    global_masks,
    magnitude_scores,
    make_permanent,
    mask_from_scores,
    mask_gradients_,
    masks_from_zeros,
    prune_iteratively,
    random_scores,
)

__all__ = [
    "AGPCallback",
    "BNSlimmingCallback",
    "BlockPruning",
    "BlockPruningResult",
    "GroupLassoCallback",
    "InputPruning",
    "InputPruningResult",
    "MagnitudePruning",
    "MaskCallback",
    "OneShotSummary",
    "PruningSummary",
    "SelectFeatures",
    "SensitivityResult",
    "SparseGPT",
    "StructuredPruner",
    "StructuredPruning",
    "StructuredPruningSummary",
    "Wanda",
    "agp",
    "apply_masks_",
    "bn_l1_penalty",
    "criteria",
    "get_masks",
    "global_masks",
    "group_lasso_penalty",
    "input_layer",
    "iterative",
    "layer_sensitivity",
    "magnitude_scores",
    "make_permanent",
    "mask_from_scores",
    "mask_gradients_",
    "masks_from_zeros",
    "one_shot",
    "oneshot",
    "prune_iteratively",
    "random_scores",
    "residual_blocks",
    "schedules",
    "select",
    "structured",
]

from .._deprecated import module_getattr as _module_getattr  # noqa: E402

__getattr__ = _module_getattr(__name__)
