"""The ``"onnxruntime"`` backend: real int8 execution with ONNX Runtime's QDQ kernels.

Flow: export the float model to ONNX (``torch.onnx.export(dynamo=False)``, which also folds BN
into conv); run calibration batches through an ONNX Runtime session whose graph exposes every
float tensor, feeding each tensor to one of *our* observers; write a QDQ graph with
``onnxruntime.quantization.quantize_static`` where every activation range is overridden by our
observer's range (``TensorQuantOverrides`` ``rmin`` / ``rmax``) and weights get ORT's per-channel
symmetric int8 scales (the same min-max rule as our fake backend). ORT fuses the
``DequantizeLinear → Conv → QuantizeLinear`` units into integer kernels at session creation;
zero pads, which it would run in float, are rewritten to int8 pads first
(:func:`~nnshrink.quantization.backends.qdq_passes.quantize_zero_pads`).

The result is an :class:`OrtInt8Module`: an ``nn.Module`` whose ``forward`` takes and returns torch
tensors, with ``save(path)`` to write the quantized ``.onnx``.
"""

from __future__ import annotations

import collections
import copy
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from torch import nn

from ...metrics.latency import park_ort_workers
from ..observers import Observer, make_observer
from .base import Backend, Calibrator, register_backend
from .qdq_passes import quantize_zero_pads


class OrtInt8Module(nn.Module):
    """Run a (quantized) ONNX model with ONNX Runtime behind an ``nn.Module`` interface.

    Args:
        onnx_bytes: the serialized ONNX model.
        threads: intra-op threads (0: ONNX Runtime's default).
        stop_spinning: park the workers after each run (see
            :func:`nnshrink.metrics.latency.ort_session`), for sessions timed in turns.

    Example:
        >>> m = OrtInt8Module(onnx_bytes, threads=2)  # doctest: +SKIP
        >>> y = m(torch.randn(1, 3, 32, 32)); m.save("resnet20-int8.onnx")  # doctest: +SKIP
    """

    def __init__(self, onnx_bytes: bytes, threads: int = 0, *, stop_spinning: bool = False) -> None:
        super().__init__()
        self.onnx_bytes = bytes(onnx_bytes)
        self.threads = threads
        self.stop_spinning = stop_spinning
        self._session = self._make_session()

    def _make_session(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        if self.stop_spinning:
            park_ort_workers(options)
        return ort.InferenceSession(self.onnx_bytes, options, providers=["CPUExecutionProvider"])

    def set_threads(self, threads: int, *, stop_spinning: bool = False) -> None:
        """Recreate the session with ``threads`` intra-op threads.

        Args:
            threads: intra-op threads (0: ONNX Runtime's default).
            stop_spinning: park the workers after each run (see
                :func:`nnshrink.metrics.latency.ort_session`), for sessions timed in turns.
        """
        self.threads = threads
        self.stop_spinning = stop_spinning
        self._session = self._make_session()

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:  # noqa: D102
        names = [i.name for i in self._session.get_inputs()]
        if len(inputs) != len(names):
            raise ValueError(f"model expects {len(names)} input(s) {names}, got {len(inputs)}")
        feeds = {
            n: t.detach().to("cpu", torch.float32).contiguous().numpy()
            for n, t in zip(names, inputs)
        }
        outs = [torch.from_numpy(o) for o in self._session.run(None, feeds)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def save(self, path: str | os.PathLike) -> None:
        """Write the ONNX model to ``path``."""
        with open(path, "wb") as f:
            f.write(self.onnx_bytes)

    def op_types(self) -> collections.Counter:
        """Count of ONNX operator types in the graph (e.g. ``QuantizeLinear``, ``Conv``)."""
        return collections.Counter(
            n.op_type for n in onnx.load_from_string(self.onnx_bytes).graph.node
        )

    def size_bytes(self) -> int:
        """Size of the serialized model."""
        return len(self.onnx_bytes)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._session = self._make_session()

    def __deepcopy__(self, memo: dict) -> OrtInt8Module:
        return OrtInt8Module(self.onnx_bytes, self.threads, stop_spinning=self.stop_spinning)

    def extra_repr(self) -> str:
        return f"{len(self.onnx_bytes)} bytes, threads={self.threads}"


def export_fp32_onnx(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], opset: int = 17
) -> bytes:
    """Export ``model`` (eval mode, a copy) to ONNX bytes with a dynamic batch axis.

    Uses the TorchScript exporter (``dynamo=False``): fast, and it folds BN into conv. Its
    DeprecationWarning is silenced here.
    """
    model = copy.deepcopy(model).eval()
    names = [
        f"input{i}" if len(example_inputs) > 1 else "input" for i in range(len(example_inputs))
    ]
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            tuple(example_inputs),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=["output"],
            dynamic_axes={**{n: {0: "batch"} for n in names}, "output": {0: "batch"}},
            do_constant_folding=True,
        )
    model_proto = onnx.load_from_string(buffer.getvalue())
    unshare_initializers(model_proto)
    return model_proto.SerializeToString()


def unshare_initializers(model: onnx.ModelProto) -> int:
    """Give every node its own copy of each initializer it reads (in place); return copies made.

    The exporter de-duplicates identical constants, e.g. the all-zero biases that BN folding gives
    every conv of an untrained network, and routes them through ``Identity`` nodes. ONNX Runtime
    cannot quantize a bias shared by convs with different input scales, and then leaves those
    convs in float; private copies let every conv become an integer ``QLinearConv``.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    copies = 0
    nodes = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            tensor = copy.deepcopy(inits[node.input[0]])
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            inits[tensor.name] = tensor
            copies += 1
        else:
            nodes.append(node)
    if len(nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(nodes)
    seen: collections.Counter = collections.Counter()
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            seen[name] += 1
            if seen[name] > 1:
                tensor = copy.deepcopy(inits[name])
                tensor.name = f"{name}__copy{seen[name]}"
                graph.initializer.append(tensor)
                inits[tensor.name] = tensor
                node.input[k] = tensor.name
                copies += 1
    return copies


def _float_tensors(model: onnx.ModelProto) -> list[str]:
    """Graph inputs and node outputs of float type, in topological order."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in list(inferred.graph.value_info)
        + list(inferred.graph.input)
        + list(inferred.graph.output)
    }
    # constants (initializers, Constant nodes and anything computed only from them, such as the
    # Identity nodes the exporter puts in front of shared weights) are weights, not activations
    const = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in const]
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in const for i in inputs)):
            const.update(node.output)
            continue
        names += [o for o in node.output if o and o not in names]
    return [n for n in names if types.get(n) == onnx.TensorProto.FLOAT]


def _augment(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """Copy of ``model`` that also outputs every tensor in ``names``."""
    augmented = copy.deepcopy(model)
    existing = {o.name for o in augmented.graph.output}
    for name in names:
        if name not in existing:
            augmented.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    return augmented


class _OneBatchReader(CalibrationDataReader):
    """ORT still runs its own (overridden) calibration pass: give it a single batch."""

    def __init__(self, feeds: dict[str, np.ndarray]) -> None:
        self.feeds = [feeds]

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.feeds.pop() if self.feeds else None


class _ListReader(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = list(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return self.feeds.pop(0) if self.feeds else None


def _quantize_qdq(
    fp32: bytes,
    reader: CalibrationDataReader,
    *,
    per_channel: bool,
    symmetric_weights: bool,
    symmetric_activations: bool,
    overrides: dict[str, list[dict[str, Any]]] | None = None,
    method: CalibrationMethod = CalibrationMethod.MinMax,
) -> bytes:
    with tempfile.TemporaryDirectory(prefix="nnshrink-ort-") as tmp:
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(fp32)
        extra: dict[str, Any] = {
            "ActivationSymmetric": symmetric_activations,
            "WeightSymmetric": symmetric_weights,
        }
        if overrides:
            extra["TensorQuantOverrides"] = overrides
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # ORT logs a "consider pre-processing" warning per call
        try:
            quantize_static(
                src,
                dst,
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
                extra_options=extra,
            )
        finally:
            root.setLevel(level)
        with open(dst, "rb") as f:
            return f.read()


def _feeds(session: ort.InferenceSession, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return {
        n: t.detach().to("cpu", torch.float32).contiguous().numpy() for n, t in zip(names, inputs)
    }


class OrtCalibrator(Calibrator):
    """Observes every float tensor of the exported ONNX graph with our observers."""

    def __init__(self, fp32: bytes, config: Any, threads: int = 0) -> None:
        self.fp32 = fp32
        self.config = config
        self.threads = threads
        model = onnx.load_from_string(fp32)
        self.tensors = _float_tensors(model)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(
            _augment(model, self.tensors).SerializeToString(),
            options,
            providers=["CPUExecutionProvider"],
        )
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.observers: dict[str, Observer] = {
            name: make_observer(
                config.observer,
                bits=config.bits,
                symmetric=config.symmetric_activations,
                percentile=config.percentile,
            )
            for name in self.tensors
        }
        self.first_feeds: dict[str, np.ndarray] | None = None
        self.ranges: dict[str, tuple[float, float]] = {}

    def observe(self, *inputs: torch.Tensor) -> None:  # noqa: D102
        feeds = _feeds(self.session, inputs)
        if self.first_feeds is None:
            self.first_feeds = feeds
        for name, value in zip(self.output_names, self.session.run(None, feeds)):
            if name in self.observers:
                self.observers[name].update(torch.from_numpy(np.asarray(value)))
        for name, value in feeds.items():
            if name in self.observers:
                self.observers[name].update(torch.from_numpy(value))

    def convert(self) -> OrtInt8Module:  # noqa: D102
        if self.first_feeds is None:
            raise RuntimeError("no calibration batch observed; call calibrate() before convert()")
        overrides = {}
        for name, obs in self.observers.items():
            if obs.batches == 0:
                continue
            lo, hi = (float(v) for v in obs.range())
            self.ranges[name] = (lo, hi)
            overrides[name] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
        int8 = _quantize_qdq(
            self.fp32,
            _OneBatchReader(self.first_feeds),
            per_channel=self.config.per_channel,
            symmetric_weights=self.config.symmetric_weights,
            symmetric_activations=self.config.symmetric_activations,
            overrides=overrides,
        )
        # ORT leaves zero pads (option-A shortcuts) in float; keep them in int8 (bit-exact)
        graph = onnx.load_from_string(int8)
        if quantize_zero_pads(graph):
            int8 = graph.SerializeToString()
        return OrtInt8Module(int8, self.threads)

    def rows(self) -> list[dict[str, Any]]:  # noqa: D102
        return [{"tensor": n, "min": lo, "max": hi} for n, (lo, hi) in self.ranges.items()]


@register_backend("onnxruntime")
class OrtBackend(Backend):
    """Export to ONNX, calibrate with our observers, write QDQ int8 and run it with ONNX Runtime."""

    def prepare(
        self,
        model: nn.Module,
        config: Any,
        example_inputs: tuple[torch.Tensor, ...] | None,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> OrtCalibrator:  # noqa: D102
        if example_inputs is None:
            raise ValueError("the onnxruntime backend needs example inputs to export the model")
        if filter_fn is not None:
            raise ValueError(
                "the onnxruntime backend quantizes the whole graph; filter_fn is not supported"
            )
        return OrtCalibrator(export_fp32_onnx(model, example_inputs), config)


def quantize_with_ort_calibration(
    model: nn.Module,
    batches: Sequence[torch.Tensor],
    *,
    method: str = "MinMax",
    per_channel: bool = True,
    threads: int = 0,
) -> OrtInt8Module:
    """Baseline: ONNX Runtime's own ``quantize_static`` calibration (no nnshrink observers).

    Args:
        model: float model.
        batches: calibration batches (single-input models).
        method: ``"MinMax"``, ``"Entropy"`` or ``"Percentile"`` (ORT calibrators).
        per_channel: per-channel weight scales.
        threads: intra-op threads of the returned module.
    """
    fp32 = export_fp32_onnx(model, (batches[0],))
    name = onnx.load_from_string(fp32).graph.input[0].name
    reader = _ListReader([{name: b.detach().float().contiguous().numpy()} for b in batches])
    int8 = _quantize_qdq(
        fp32,
        reader,
        per_channel=per_channel,
        symmetric_weights=True,
        symmetric_activations=False,
        method=CalibrationMethod[method],
    )
    return OrtInt8Module(int8, threads)
