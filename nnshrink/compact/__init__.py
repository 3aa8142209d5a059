"""Compact filter design: drop-in compact conv blocks, transferred filters, and a replacer."""

from .blocks import (
    BLOCKS,
    ChannelShuffle,
    DepthwiseSeparableConv,
    FactorizedConv,
    FireConv,
    ShuffleConv,
)
from .replace import CompactReplace, CompactResult, LayerChange, build_block, skip_reason
from .transferred import CReLUConv2d, P4GroupConv2d, P4LiftingConv2d, p4_pool, rotate_p4

__all__ = [
    "BLOCKS",
    "CReLUConv2d",
    "ChannelShuffle",
    "CompactReplace",
    "CompactResult",
    "DepthwiseSeparableConv",
    "FactorizedConv",
    "FireConv",
    "LayerChange",
    "P4GroupConv2d",
    "P4LiftingConv2d",
    "ShuffleConv",
    "build_block",
    "p4_pool",
    "rotate_p4",
    "skip_reason",
]
