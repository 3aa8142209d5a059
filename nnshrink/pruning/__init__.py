"""Pruning: unstructured masks, structured (channel) pruning, schedules, sensitivity analysis."""

from . import criteria, schedules, select, structured
from .depth import BlockPruning, BlockPruningResult, residual_blocks
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
    prune_,
    prune_iteratively,
    random_scores,
)

__all__ = [
    "AGPCallback",
    "BNSlimmingCallback",
    "BlockPruning",
    "BlockPruningResult",
    "MagnitudePruning",
    "MaskCallback",
    "PruningSummary",
    "SensitivityResult",
    "StructuredPruner",
    "StructuredPruning",
    "StructuredPruningSummary",
    "agp",
    "apply_masks_",
    "bn_l1_penalty",
    "criteria",
    "get_masks",
    "global_masks",
    "iterative",
    "layer_sensitivity",
    "magnitude_scores",
    "make_permanent",
    "mask_from_scores",
    "mask_gradients_",
    "masks_from_zeros",
    "one_shot",
    "prune_",
    "prune_iteratively",
    "random_scores",
    "residual_blocks",
    "schedules",
    "select",
    "structured",
]
