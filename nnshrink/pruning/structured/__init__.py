"""Structured pruning: channels, attention heads and MLP neurons, physically removed.

Levels (imports flow one way): :mod:`.tracing` and :mod:`.graph` (trace -> dependency graph)
<- :mod:`.group` (coupled edits) <- :mod:`.pruner` (policy); :mod:`.layer_ops` holds the
per-layer slicers and the registry of layer rules, :mod:`.attention` the
``nn.MultiheadAttention`` rule and its replacement module.

Example:
    >>> import torch, nnshrink as ns
    >>> model = ns.models.create("vit", depth=2)
    >>> x = torch.randn(1, 1, 28, 28)
    >>> result = ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=x)
    >>> sorted({row.kind for row in result.groups})
    ['channels', 'heads']
"""

from .attention import PrunableMultiheadAttention
from .check import PlanError
from .config import GroupRow, StructuredPruning, StructuredPruningSummary
from .graph import ChannelEdit, DependencyGraph, HeadSplit, ModuleCall, UnsupportedModelError
from .group import Group, GroupEdit, build_groups
from .heads import update_head_attributes
from .layer_ops import (
    LayerOps,
    ops_for,
    prune_in_channels,
    prune_out_channels,
    register_layer_ops,
    supported_types,
)
from .pruner import StructuredPruner
from .slimming import BNSlimmingCallback, bn_l1_penalty

__all__ = [
    "BNSlimmingCallback",
    "ChannelEdit",
    "DependencyGraph",
    "Group",
    "GroupEdit",
    "GroupRow",
    "HeadSplit",
    "LayerOps",
    "ModuleCall",
    "PlanError",
    "PrunableMultiheadAttention",
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
    "update_head_attributes",
]
