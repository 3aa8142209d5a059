"""Pruning: unstructured masks (magnitude, and one-shot Wanda / SparseGPT, unstructured or N:M),
structured (channel), depth and input-feature pruning, schedules, sensitivity analysis."""

from .._deprecated import module_getattr
from . import criteria, oneshot, schedules, select, structured
from .depth import BlockPruning, BlockPruningSummary, residual_blocks
from .inputs import (
    GroupLassoCallback,
    InputPruning,
    InputPruningSummary,
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
    UnsupportedModelError,
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
    lamp_scores,
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
    "BlockPruningSummary",
    "GroupLassoCallback",
    "InputPruning",
    "InputPruningSummary",
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
    "UnsupportedModelError",
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
    "lamp_scores",
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

__getattr__ = module_getattr(__name__)  # BlockPruningResult, InputPruningResult (renamed)
