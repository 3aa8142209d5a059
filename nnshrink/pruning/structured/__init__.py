"""Structured (channel) pruning: dependency graph <- groups <- pruner, plus per-layer slicers.

Example:
    >>> import nnshrink as ns  # doctest: +SKIP
    >>> ns.compress_(model, StructuredPruning(ratio=0.5), example_inputs=x)  # doctest: +SKIP
"""

from .graph import ChannelEdit, DependencyGraph, UnsupportedModelError
from .group import Group, GroupEdit, build_groups
from .layer_ops import (
    LayerOps,
    ops_for,
    prune_in_channels,
    prune_out_channels,
    register_layer_ops,
    supported_types,
)
from .pruner import (
    BNSlimmingCallback,
    GroupRow,
    StructuredPruner,
    StructuredPruning,
    StructuredPruningSummary,
    bn_l1_penalty,
)

__all__ = [
    "BNSlimmingCallback",
    "ChannelEdit",
    "DependencyGraph",
    "Group",
    "GroupEdit",
    "GroupRow",
    "LayerOps",
    "StructuredPruner",
    "StructuredPruning",
    "StructuredPruningSummary",
    "UnsupportedModelError",
    "bn_l1_penalty",
    "build_groups",
    "ops_for",
    "prune_in_channels",
    "prune_out_channels",
    "register_layer_ops",
    "supported_types",
]
