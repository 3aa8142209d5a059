"""Quantization to int8 and below: PTQ (static, dynamic, weight-only), QAT, mixed precision.

``compress_(model, PTQ(...), example_inputs=...)`` edits the model in place and returns the
deployable runtime module as ``result.artifact`` (see :mod:`nnshrink.quantization.ptq`);
:func:`convert` builds it again later. Parameter sharing lives in :mod:`nnshrink.sharing`,
binary/ternary weights in :mod:`nnshrink.binary`.
"""

from .backends import Backend, Calibrator, backend_names, get_backend, register_backend
from .convert import Int8Record, convert
from .fold import fold_batchnorm, fold_bn_params, fuse_conv_bn
from .int8_linear import Int8DynamicLinear, WeightOnlyLinear
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
from .primitives import (
    dequantize,
    fake_quantize,
    lsq_fake_quantize,
    minmax_qparams,
    qparams_from_range,
    qrange,
    quantize,
)
from .ptq import PTQ, PTQSummary, calibration_batches, prepare, quantize_ptq
from .qat import QAT, QATConv2d, QATLinear, convert_qat, prepare_qat, strip_qat

__all__ = [
    "OBSERVERS",
    "PTQ",
    "PTQSummary",
    "Int8DynamicLinear",
    "Int8Record",
    "WeightOnlyLinear",
    "convert",
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
    "PercentileObserver",
    "QATConv2d",
    "QATLinear",
    "allocate_bits",
    "backend_names",
    "calibration_batches",
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
    "strip_qat",
]

from .._deprecated import module_getattr as _module_getattr  # noqa: E402

__getattr__ = _module_getattr(__name__)
