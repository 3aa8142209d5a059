"""Static int8 (``PTQ(mode="static")``): one calibration, the calibrated model, the runtime graphs.

Steps (all inside ``compress_``'s transaction):

1. fold BatchNorm into the preceding layers, in place;
2. build each runtime's calibrator from the folded float model: the exported ONNX graph
   (ONNX Runtime) and the torch.ao FX graph (``auto`` builds both; a runtime that cannot take
   the model, e.g. FX on a Hugging Face model, is recorded as unavailable);
3. swap the selected layers for observing ``QuantizedLayer`` modules and run every calibration
   batch through the model and through each runtime's observers;
4. freeze the layers (int8 weights + activation qparams: the *calibrated form* left in the
   user's model), convert each runtime graph, and for ``auto`` time both at
   ``config.batch_sizes`` and wrap them in an ``AutoInt8Module``.

The ranges each graph used are recorded on the model (:class:`~nnshrink.quantization.convert.
Int8Record`) so that :func:`~nnshrink.quantization.convert.convert` can rebuild the artefact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core import Deployable
from .backends.fake import QuantizedLayer, swap_in_quantized_layers
from .convert import RECORD, Int8Record
from .fold import fold_batchnorm
from .ptq import PTQ, PTQSummary, calibration_batches
from .select import layer_bits, quantizable_layers


def _unsupported(message: str) -> Exception:
    from ..pruning.structured.graph import UnsupportedModelError

    return UnsupportedModelError(message)


def _calibrator(runtime: str, model: nn.Module, config: PTQ, inputs: tuple, skipped: list[str]):
    threads = torch.get_num_threads()
    if runtime == "onnxruntime":
        from .backends.ort import OrtCalibrator, export_fp32_onnx

        return OrtCalibrator(export_fp32_onnx(model, inputs), config, threads, skipped)
    from .backends.torch_ao import TorchFxBackend

    names = set(skipped)
    return TorchFxBackend().prepare(model, config, inputs, lambda m, n: n not in names)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def quantize_static_(
    model: nn.Module,
    config: PTQ,
    example_inputs: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None,
) -> Deployable:
    """Static int8 in place; returns ``Deployable(PTQSummary, runtime module)``.

    Args:
        model: edited in place into its calibrated form.
        config: ``PTQ(mode="static")`` with backend ``auto``, ``onnxruntime`` or ``torch-fx``.
        example_inputs: calibration batches (see :func:`~nnshrink.quantization.ptq.
            calibration_batches`).
        filter_fn: ``(module, name) -> bool`` on top of the layer selection.
    """
    batches = calibration_batches(example_inputs)[: config.calibration_batches]
    model.eval()
    fold_batchnorm(model)
    layers, skipped = quantizable_layers(model, config, filter_fn)
    if not layers:
        raise ValueError(
            f"no Conv/Linear layer to quantize (check include/exclude/per_layer/filter_fn); "
            f"skipped: {skipped}"
        )
    for layer in layers:
        layer_bits(layer, config, (8,))
    runtimes = ("onnxruntime", "torch-fx") if config.backend == "auto" else (config.backend,)
    calibrators, unavailable = {}, {}
    for runtime in runtimes:
        try:
            calibrators[runtime] = _calibrator(runtime, model, config, batches[0], list(skipped))
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot take the model
            unavailable[runtime] = _reason(exc)
    if not calibrators:
        raise _unsupported(
            f"static int8 needs an ONNX export or a torch.fx trace of {type(model).__name__}; "
            f"neither works here ({unavailable}). Use PTQ(mode='dynamic') for Linear layers, "
            "or backend='fake' to simulate"
        )
    names, _, notes = swap_in_quantized_layers(model, config, filter_fn, act_mode="static")
    for batch in batches:
        with torch.no_grad():
            model(*batch)
        for calibrator in calibrators.values():
            calibrator.observe(*batch)
    for name in names:
        model.get_submodule(name).freeze()
    built = {}
    for runtime, calibrator in calibrators.items():
        try:
            built[runtime] = calibrator.convert()
        except Exception as exc:  # noqa: BLE001 - e.g. convert_fx refusing an op
            if len(calibrators) == 1:
                raise
            unavailable[runtime] = _reason(exc)
    record = Int8Record(config, excluded=list(skipped))
    if "onnxruntime" in calibrators:
        record.ort_ranges = dict(calibrators["onnxruntime"].ranges)
    if "torch-fx" in built:
        record.fx_ranges = calibrators["torch-fx"].ranges()
    artifact, runtime = _deployable(built, batches[0], config, record)
    model.__dict__[RECORD] = record
    summary = PTQSummary(
        mode="static",
        backend=config.backend,
        runtime=runtime,
        layers=_rows(model, names, list(built)),
        skipped=skipped,
        calibration_batches=len(batches),
        timings=record.timings,
        choice=record.choice,
        unavailable=unavailable,
        notes=[f"fused fast path disabled: {n or '(model)'}" for n in notes],
        ranges=calibrators["onnxruntime"].rows() if "onnxruntime" in calibrators else [],
    )
    return Deployable(summary, artifact)


def _deployable(
    built: dict[str, nn.Module], inputs: tuple, config: PTQ, record: Int8Record
) -> tuple[nn.Module, str]:
    if len(built) == 1:
        runtime, module = next(iter(built.items()))
        record.choice = {b: runtime for b in config.batch_sizes}
        return module, runtime
    from .backends.auto import AutoInt8Module, time_runtimes

    ort = built["onnxruntime"]
    # ONNX Runtime's workers spin after each run and would starve the PyTorch path that runs
    # next in the same process: park them, for the timing and in the artefact
    ort.set_threads(ort.threads, stop_spinning=True)
    record.timings, record.choice = time_runtimes(built, inputs, config.batch_sizes)
    auto = AutoInt8Module(ort.onnx_bytes, built["torch-fx"], record.choice, record.timings,
                          ort.threads, stop_spinning=True)  # fmt: skip
    picks = ", ".join(f"b{b}: {rt}" for b, rt in sorted(record.choice.items()))
    return auto, f"auto ({picks})"


def _rows(model: nn.Module, names: list[str], runtimes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        q: QuantizedLayer = model.get_submodule(name)
        rows.append({
            "name": name,
            "type": type(q.layer).__name__,
            "bits": q.bits,
            "kernel": " / ".join(runtimes),
            "act_scale": float(q.act_scale),
            "act_zero_point": int(q.act_zero_point),
            "weight_bytes": q.weight_q.numel() * q.weight_q.element_size(),
        })  # fmt: skip
    return rows
