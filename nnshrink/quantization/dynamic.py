"""Dynamic and weight-only int8 for Linear-heavy models (``PTQ(mode="dynamic" | "weight-only")``).

The selected ``nn.Linear`` / GPT-2 ``Conv1D`` layers are replaced in place by
:class:`~nnshrink.quantization.int8_linear.Int8DynamicLinear` or
:class:`~nnshrink.quantization.int8_linear.WeightOnlyLinear`, which run PyTorch's integer kernels,
so the edited model is itself the int8 model (``backend="torch"``, the default). With
``backend="onnxruntime"`` the same layers are also exported as ONNX Runtime's integer nodes
(``DynamicQuantizeMatMul`` / ``MatMulNBits``, the same codes) into ``result.artifact``.

Layers kept in float: everything ``exclude`` / ``per_layer: None`` names (e.g. a sensitive
projection), and the projections of ``nn.MultiheadAttention``, which its forward never calls
(see :mod:`~nnshrink.quantization.select`). Fused ``nn.TransformerEncoder`` fast paths that would
bypass the int8 layers are switched off.

Neither mode needs calibration data: the weights are quantized from their own range and the
activations (dynamic) from each batch's. ``example_inputs`` is needed only to export to ONNX.

Example:
    >>> import nnshrink as ns
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> result = ns.compress_(model, PTQ(mode="dynamic"))
    >>> type(model[0]).__name__, result.summary.runtime
    ('Int8DynamicLinear', 'torch')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core import Deployable, set_submodule
from .convert import RECORD, Int8Record
from .int8_linear import Int8DynamicLinear, WeightOnlyLinear
from .ptq import PTQ, PTQSummary, calibration_batches
from .select import disable_fused_fast_paths, layer_bits, layer_type, quantizable_layers


def _unsupported(message: str) -> Exception:
    from ..pruning.structured.graph import UnsupportedModelError

    return UnsupportedModelError(message)


def _kernel(module: nn.Module) -> str:
    if isinstance(module, Int8DynamicLinear):
        return "quantized::linear_dynamic (fbgemm)"
    if not module.has_kernel:
        return "none in PyTorch (dequantized weight); MatMulNBits in ONNX Runtime"
    if module.bits == 8:
        return "aten::_weight_int8pack_mm"
    return "aten::_weight_int4pack_mm_for_cpu"


def export_int8(model: nn.Module, inputs: tuple, threads: int) -> nn.Module:
    """The ONNX Runtime module of a model holding int8 Linear layers (exported as integer ops).

    Raises:
        UnsupportedModelError: when the model does not export to ONNX.
    """
    from .backends.ort import export_fp32_onnx
    from .backends.ort_module import OrtInt8Module

    try:
        onnx_bytes = export_fp32_onnx(model, inputs)
    except Exception as exc:  # noqa: BLE001 - any exporter failure means: no ONNX artefact
        first = (str(exc).strip().splitlines() or [""])[0]
        raise _unsupported(
            f"ONNX export of {type(model).__name__} failed ({type(exc).__name__}: {first}); use "
            "backend='torch' (the int8 layers run in PyTorch)"
        ) from exc
    return OrtInt8Module(onnx_bytes, threads)


def quantize_linear_(
    model: nn.Module,
    config: PTQ,
    example_inputs: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None,
) -> PTQSummary | Deployable:
    """Replace the selected Linear layers by int8 ones in place (see the module docstring).

    Args:
        model: edited in place.
        config: ``PTQ(mode="dynamic" | "weight-only")`` with backend ``auto``, ``torch`` or
            ``onnxruntime``.
        example_inputs: one input batch, needed with ``backend="onnxruntime"`` (export).
        filter_fn: ``(module, name) -> bool`` on top of the layer selection.
    """
    ort = config.backend == "onnxruntime"
    if ort and example_inputs is None:
        raise ValueError(
            "backend='onnxruntime' exports the model: pass example_inputs= one input batch"
        )
    layers, skipped = quantizable_layers(model, config, filter_fn, convs=False)
    if not layers:
        raise ValueError(
            "no Linear layer to quantize (check include/exclude/per_layer/filter_fn)"
            + (f"; skipped: {skipped}" if skipped else "")
        )
    allowed = (8,) if config.mode == "dynamic" else (8, 4)
    plan = []
    for layer in layers:
        bits = layer_bits(layer, config, allowed)
        if config.mode == "dynamic":
            new = Int8DynamicLinear.from_float(
                layer.module, config.per_channel, config.reduce_range
            )
        else:
            config._check_group_size(bits)
            group = config.resolved_group_size(bits)
            new = WeightOnlyLinear.from_float(layer.module, bits, group)
        plan.append((layer, new))
    rows = []
    for layer, new in plan:  # every layer built first: no half-edited model on error
        set_submodule(model, layer.name, new)
        rows.append({
            "name": layer.name,
            "type": layer_type(layer.module),
            "bits": getattr(new, "bits", 8),
            "kernel": _kernel(new),
            "weight_bytes": new.weight_bytes(),
        })  # fmt: skip
    notes = disable_fused_fast_paths(model, [layer.name for layer in layers])
    model.__dict__[RECORD] = Int8Record(config, excluded=list(skipped))
    summary = PTQSummary(
        mode=config.mode,
        backend=config.backend,
        runtime="onnxruntime" if ort else "torch",
        layers=rows,
        skipped=skipped,
        notes=[f"fused fast path disabled: {n or '(model)'}" for n in notes],
    )
    if not ort:
        return summary
    inputs = calibration_batches(example_inputs)[0]
    return Deployable(summary, export_int8(model, inputs, torch.get_num_threads()))
