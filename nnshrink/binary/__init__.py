"""Binary and ternary weights: BinaryConnect, XNOR-Net scales, TWN and TTQ.

Weights are kept as float latents during training and used as {-1, +1} (times a scale) or
{-a, 0, +b} in the forward pass (straight-through estimator); ``strip_low_bit`` makes them plain
layers with the quantized values, which ``.nns`` stores at 1 or 2 bits per weight.
"""

from .config import BinaryWeights, Ternary
from .layers import (
    BinaryConv2d,
    BinaryLinear,
    LatentClip,
    TernaryConv2d,
    TernaryLinear,
    clip_latent_,
    pack_low_bit,
    recalibrate_batchnorm_,
    strip_low_bit,
)

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryWeights",
    "LatentClip",
    "Ternary",
    "TernaryConv2d",
    "TernaryLinear",
    "clip_latent_",
    "pack_low_bit",
    "recalibrate_batchnorm_",
    "strip_low_bit",
]
