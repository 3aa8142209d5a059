"""Quantization and parameter sharing: int8 PTQ/QAT, k-means sharing, binary/ternary, hashing."""

from .backends import Backend, Calibrator, backend_names, get_backend, register_backend
from .binary import (
    BinaryConv2d,
    BinaryLinear,
    TernaryConv2d,
    TernaryLinear,
    strip_low_bit,
)
from .binary_config import BinaryWeights, Ternary
from .circulant import Circulant, CirculantLinear
from .fold import fold_batchnorm, fold_bn_params, fuse_conv_bn
from .hashing import HashedLinear, Hashing
from .kmeans import WeightSharing, codebook_of, share_weights, strip_sharing
from .mixed import MixedPrecision, allocate_bits, layer_sensitivity
from .observers import (
    OBSERVERS,
    HistogramObserver,
    KLObserver,
    MinMaxObserver,
    MovingAverageObserver,
    MSEObserver,
    Observer,
    PercentileObserver,
    make_observer,
)
from .packbits import PackedTensor, pack_bits, unpack_bits
from .primitives import (
    dequantize,
    fake_quantize,
    lsq_fake_quantize,
    minmax_qparams,
    qparams_from_range,
    qrange,
    quantize,
)
from .ptq import PTQ, PTQResult, calibration_batches, prepare, quantize_ptq
from .qat import QAT, QATConv2d, QATLinear, convert_qat, prepare_qat, strip_qat

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryWeights",
    "Circulant",
    "CirculantLinear",
    "HashedLinear",
    "Hashing",
    "PackedTensor",
    "Ternary",
    "TernaryConv2d",
    "TernaryLinear",
    "pack_bits",
    "strip_low_bit",
    "unpack_bits",
    "OBSERVERS",
    "PTQ",
    "QAT",
    "Backend",
    "Calibrator",
    "HistogramObserver",
    "KLObserver",
    "MSEObserver",
    "MinMaxObserver",
    "MixedPrecision",
    "MovingAverageObserver",
    "Observer",
    "PTQResult",
    "PercentileObserver",
    "QATConv2d",
    "QATLinear",
    "WeightSharing",
    "allocate_bits",
    "backend_names",
    "calibration_batches",
    "codebook_of",
    "convert_qat",
    "dequantize",
    "fake_quantize",
    "fold_batchnorm",
    "fold_bn_params",
    "fuse_conv_bn",
    "get_backend",
    "layer_sensitivity",
    "lsq_fake_quantize",
    "make_observer",
    "minmax_qparams",
    "prepare",
    "prepare_qat",
    "qparams_from_range",
    "qrange",
    "quantize",
    "quantize_ptq",
    "register_backend",
    "share_weights",
    "strip_qat",
    "strip_sharing",
]
