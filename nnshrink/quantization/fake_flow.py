"""``backend="fake"``: simulated quantization in PyTorch, in place, for every mode and width.

The selected layers become :class:`~nnshrink.quantization.backends.fake.QuantizedLayer` modules
(integer weight codes, activations fake-quantized as the mode says). Nothing runs int8 kernels;
use it to study accuracy at 2..8 bits, or to see what an int8 runtime would compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .backends.fake import FakeBackend
from .ptq import PTQ, PTQSummary, calibration_batches


def quantize_fake_(
    model: nn.Module,
    config: PTQ,
    example_inputs: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None,
) -> PTQSummary:
    """Swap in ``QuantizedLayer`` modules, calibrate them (static mode), freeze them.

    Args:
        model: edited in place.
        config: a ``PTQ`` with ``backend="fake"``.
        example_inputs: calibration batches (static mode; ignored otherwise).
        filter_fn: ``(module, name) -> bool`` on top of the layer selection.
    """
    batches = calibration_batches(example_inputs) if config.mode == "static" else []
    calibrator = FakeBackend().prepare(model, config, None, filter_fn)
    seen = calibrator.calibrate(batches, limit=config.calibration_batches) if batches else 0
    calibrator.convert()
    notes = [f"fused fast path disabled: {name or '(model)'}" for name in calibrator.notes]
    return PTQSummary(
        mode=config.mode,
        backend="fake",
        runtime="fake",
        layers=calibrator.rows(),
        skipped=calibrator.skipped,
        calibration_batches=seen,
        notes=notes,
    )
