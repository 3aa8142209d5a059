"""Binary and ternary weights and XNOR-Net: BinaryConnect, XNOR scales, TWN, TTQ, XNOR + popcount.

Weights are kept as float latents during training and used as {-1, +1} (times a scale) or
{-a, 0, +b} in the forward pass (straight-through estimator); ``strip_low_bit`` makes them plain
layers with the quantized values, which ``.nns`` stores at 1 or 2 bits per weight. XNOR-Net
layers (``BinaryWeights(mode="xnor", activations=True)``) binarize the activations too and run
a bit-packed XNOR + popcount kernel (:mod:`nnshrink.binary.xnor`); ``finalize`` packs them.
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
from .xnor import PackedWeights, xnor_backend, xnor_conv2d, xnor_conv2d_reference, xnor_linear
from .xnor_layers import PackedXNORConv2d, PackedXNORLinear, XNORConv2d, XNORLinear

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryWeights",
    "LatentClip",
    "PackedWeights",
    "PackedXNORConv2d",
    "PackedXNORLinear",
    "Ternary",
    "TernaryConv2d",
    "TernaryLinear",
    "XNORConv2d",
    "XNORLinear",
    "clip_latent_",
    "pack_low_bit",
    "recalibrate_batchnorm_",
    "strip_low_bit",
    "xnor_backend",
    "xnor_conv2d",
    "xnor_conv2d_reference",
    "xnor_linear",
]
