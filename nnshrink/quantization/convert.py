"""Deployable int8 artefacts from a model that ``compress_(model, PTQ(...))`` edited in place.

``compress_`` already returns the artefact it built (``result.artifact``). :func:`convert` builds
one again later, from the model alone and without calibrating again: the handler leaves an
:class:`Int8Record` on the model (``model.nnshrink_int8``: the config, and for static mode every
activation range each runtime graph uses), and the model's own int8 layers hold the weight codes.

* static: the calibrated form's ``QuantizedLayer`` modules become float layers holding their
  dequantized weights (a *float twin*); exported and quantized with the recorded ranges, the
  twin gives the same int8 weight codes (symmetric min-max of values already on the grid) and
  the same activation qparams, so the graph is the one ``compress_`` built.
* dynamic / weight-only: the int8 layers export themselves as integer ONNX nodes
  (``runtime="onnxruntime"``); ``runtime="torch"`` is the model itself.

The record is a plain attribute: it survives ``copy.deepcopy`` and pickling, not a state-dict
round trip (after loading weights, run ``compress_`` again).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from ..core import ConfigError, set_submodule
from .backends.fake import QuantizedLayer

RECORD = "nnshrink_int8"


@dataclasses.dataclass
class Int8Record:
    """What :func:`convert` needs besides the model's weights.

    Attributes:
        config: the ``PTQ`` config that was applied.
        excluded: candidate layers kept in float.
        ort_ranges: ONNX Runtime graph: ``{tensor: (lo, hi)}``.
        fx_ranges: torch.ao FX graph: ``{observer module: (lo, hi)}``.
        choice: ``auto``: ``{batch: runtime}``.
        timings: ``auto``: ``{batch: {runtime: ms}}``.
    """

    config: Any
    excluded: list[str] = dataclasses.field(default_factory=list)
    ort_ranges: dict[str, tuple[float, float]] | None = None
    fx_ranges: dict[str, tuple[float, float]] | None = None
    choice: dict[int, str] = dataclasses.field(default_factory=dict)
    timings: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)


def record_of(model: nn.Module) -> Int8Record:
    """The :class:`Int8Record` ``compress_(model, PTQ(...))`` left on ``model``.

    Raises:
        ConfigError: when the model was not quantized by ``compress_`` with a ``PTQ`` config.
    """
    record = model.__dict__.get(RECORD)
    if not isinstance(record, Int8Record):
        raise ConfigError(
            "this model holds no int8 calibration: quantize it with "
            "nnshrink.compress_(model, PTQ(...), example_inputs=...) first"
        )
    return record


def float_twin(model: nn.Module) -> nn.Module:
    """A copy of the calibrated model whose ``QuantizedLayer`` modules are plain float layers
    holding the dequantized weights (what the runtimes export, trace and quantize again)."""
    twin = copy.deepcopy(model)
    twin.__dict__.pop(RECORD, None)
    for name, module in list(twin.named_modules()):
        if isinstance(module, QuantizedLayer) and module.frozen:
            layer = copy.deepcopy(module.layer)
            layer.weight = nn.Parameter(module.dequantized_weight().detach().clone())
            set_submodule(twin, name, layer)
    return twin.eval()


def convert(
    model: nn.Module,
    runtime: str = "auto",
    example_inputs: Any = None,
    *,
    threads: int | None = None,
) -> nn.Module:
    """Build the deployable int8 module of a model quantized in place by ``compress_``.

    Args:
        model: the model after ``compress_(model, PTQ(...))`` (not modified).
        runtime: static: ``onnxruntime``, ``torch-fx`` or ``auto`` (both, with the recorded
            per-batch choice); dynamic / weight-only: ``onnxruntime`` or ``torch`` (the model).
        example_inputs: one input batch (to export / trace; its values are not used for ranges).
        threads: ONNX Runtime intra-op threads (default: ``torch.get_num_threads()``).

    Returns:
        an ``OrtInt8Module``, an ``AutoInt8Module``, a torch.ao ``GraphModule`` or ``model``.

    Example:
        >>> result = ns.compress_(model, PTQ(), example_inputs=batches)  # doctest: +SKIP
        >>> ort = convert(model, "onnxruntime", batches[0])  # doctest: +SKIP
        >>> ort.save("model-int8.onnx")  # doctest: +SKIP
    """
    from .ptq import calibration_batches

    record = record_of(model)
    config = record.config
    threads = torch.get_num_threads() if threads is None else threads
    if config.mode != "static":
        if runtime == "torch":
            return model
        if runtime != "onnxruntime":
            raise ConfigError(
                f"mode={config.mode!r}: runtime is 'onnxruntime' or 'torch', got {runtime!r}"
            )
        from .dynamic import export_int8

        return export_int8(model, calibration_batches(example_inputs)[0], threads)
    if runtime not in ("auto", "onnxruntime", "torch-fx"):
        raise ConfigError(
            f"static int8: runtime is 'auto', 'onnxruntime' or 'torch-fx', got {runtime!r}"
        )
    inputs = calibration_batches(example_inputs)[0]
    twin = float_twin(model)
    built = {}
    if runtime in ("auto", "onnxruntime") and record.ort_ranges is not None:
        built["onnxruntime"] = _ort_from_record(twin, record, inputs, threads)
    if runtime in ("auto", "torch-fx") and record.fx_ranges is not None:
        built["torch-fx"] = _fx_from_record(twin, record, inputs)
    if runtime != "auto" and runtime not in built:
        raise ConfigError(f"compress_ built no {runtime} graph for this model (see summary)")
    if runtime != "auto" or len(built) == 1:
        return next(iter(built.values()))
    from .backends.auto import AutoInt8Module

    ort = built["onnxruntime"]
    return AutoInt8Module(ort.onnx_bytes, built["torch-fx"], record.choice, record.timings,
                          threads, stop_spinning=True)  # fmt: skip


def _ort_from_record(twin: nn.Module, record: Int8Record, inputs: Any, threads: int) -> nn.Module:
    import onnx

    from .backends.ort import build_static_int8, export_fp32_onnx, input_feeds, nodes_of_modules

    fp32 = export_fp32_onnx(twin, inputs)
    excluded = nodes_of_modules(onnx.load_from_string(fp32), record.excluded)
    return build_static_int8(
        fp32, record.ort_ranges, record.config, input_feeds(fp32, inputs), excluded, threads
    )


def _fx_from_record(twin: nn.Module, record: Int8Record, inputs: Any) -> nn.Module:
    from .backends.torch_ao import TorchFxBackend

    config = dataclasses.replace(record.config, backend="torch-fx")
    calibrator = TorchFxBackend().prepare(twin, config, tuple(inputs), _keep(record.excluded))
    calibrator.set_ranges(record.fx_ranges)
    return calibrator.convert()


def _keep(excluded: list[str]):
    names = set(excluded)
    return lambda module, name: name not in names
