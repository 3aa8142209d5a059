"""Reference baselines from ONNX Runtime's own quantization tools (for benchmarks and tests).

:func:`~nnshrink.quantization.backends.ort.quantize_with_ort_calibration` (static) lives next to
the static flow it shares code with; this is the dynamic one.
"""

from __future__ import annotations

import logging
import os
import tempfile

from onnxruntime.quantization import QuantType

from .ort_module import OrtInt8Module


def quantize_dynamic_with_ort(fp32: bytes, *, per_channel: bool = False, threads: int = 0):
    """Baseline: ONNX Runtime's own ``quantize_dynamic`` (int8 weights on MatMul nodes).

    Args:
        fp32: an exported float graph (:func:`export_fp32_onnx`).
        per_channel: per-channel weight scales (ORT's default is per tensor).
        threads: intra-op threads of the returned module.
    """
    from onnxruntime.quantization import quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="nnshrink-ort-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(fp32)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            quantize_dynamic(src, dst, per_channel=per_channel, weight_type=QuantType.QInt8)
        finally:
            root.setLevel(level)
        with open(dst, "rb") as f:
            return OrtInt8Module(f.read(), threads)
