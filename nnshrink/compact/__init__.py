"""Compact filter design: drop-in compact conv blocks, transferred filters, and a replacer."""

from .blocks import (
    BLOCKS,
    ChannelShuffle,
    DepthwiseSeparableConv,
    FactorizedConv,
    FireConv,
    ShuffleConv,
)
from .fit import TransferFit, fit_crelu, fit_rotation, group_rotations, pair_filters
from .graph import ConvUse, conv_uses
from .replace import ALL_BLOCKS, CompactReplace, CompactResult, LayerChange, build_block
from .selection import skip_reason
from .transfer import TransferPlan, plan_transfer
from .transferred import (
    TRANSFERRED_BLOCKS,
    CReLUConv2d,
    P4GroupConv2d,
    P4LiftingConv2d,
    RotationConv2d,
    p4_pool,
    rot90_filters,
    rotate_p4,
)

__all__ = [
    "ALL_BLOCKS",
    "BLOCKS",
    "CReLUConv2d",
    "ChannelShuffle",
    "CompactReplace",
    "CompactResult",
    "ConvUse",
    "DepthwiseSeparableConv",
    "FactorizedConv",
    "FireConv",
    "LayerChange",
    "P4GroupConv2d",
    "P4LiftingConv2d",
    "RotationConv2d",
    "ShuffleConv",
    "TRANSFERRED_BLOCKS",
    "TransferFit",
    "TransferPlan",
    "build_block",
    "conv_uses",
    "fit_crelu",
    "fit_rotation",
    "group_rotations",
    "p4_pool",
    "pair_filters",
    "plan_transfer",
    "rot90_filters",
    "rotate_p4",
    "skip_reason",
]
