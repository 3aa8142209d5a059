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

The result is an :class:`~nnshrink.quantization.backends.ort_module.OrtInt8Module`: an
``nn.Module`` whose ``forward`` takes and returns torch tensors, with ``save(path)`` to write the
quantized ``.onnx``. :func:`export_fp32_onnx` is also how the dynamic and weight-only int8 layers
become ONNX (their symbolics write integer nodes).
"""

from __future__ import annotations

import collections
import copy
import inspect
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

from ..observers import Observer, make_observer
from .base import Backend, Calibrator, register_backend
from .ort_module import OrtInt8Module, as_feed
from .qdq_passes import quantize_zero_pads


class _KeywordCall(nn.Module):
    """Export wrapper: call the model with keyword arguments named after its ``forward``
    parameters (Hugging Face models refuse positional tracing) and return plain tensors (a
    ``ModelOutput`` / dict / nested tuple becomes a flat tuple)."""

    def __init__(self, model: nn.Module, names: list[str] | None) -> None:
        super().__init__()
        self.m = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> Any:  # noqa: D102
        if self.names is None:
            out = self.m(*inputs)
        else:
            out = self.m(**dict(zip(self.names, inputs)))
        flat = _flat_tensors(out)
        return flat[0] if len(flat) == 1 else tuple(flat)


def _flat_tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):  # ModelOutput is an OrderedDict of its non-None fields
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for item in out for t in _flat_tensors(item)]
    return []


def _positional_names(model: nn.Module, count: int) -> list[str] | None:
    """Names of the first ``count`` parameters of ``model.forward`` (None: call positionally)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    named = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
    if len(named) < count or any(p.kind == p.VAR_POSITIONAL for p in params[:count]):
        return None
    return named[:count]


#: module-path prefix of every node name in graphs written by :func:`export_fp32_onnx`
EXPORT_PREFIX = "m"


def export_fp32_onnx(
    model: nn.Module, example_inputs: Sequence[torch.Tensor], opset: int = 17
) -> bytes:
    """Export ``model`` (eval mode, a copy) to ONNX bytes with a dynamic batch axis.

    Uses the TorchScript exporter (``dynamo=False``): fast, and it folds BN into conv. Its
    DeprecationWarning is silenced here. Integer inputs (token ids, masks) also get a dynamic
    second axis (sequence length). Int8 layers of :mod:`nnshrink.quantization.int8_linear`
    export as integer ONNX / ONNX Runtime nodes. Outputs are the model's tensors, flattened.
    """
    model = copy.deepcopy(model).eval()
    wrapped = _KeywordCall(model, _positional_names(model, len(example_inputs)))
    names = [
        f"input{i}" if len(example_inputs) > 1 else "input" for i in range(len(example_inputs))
    ]
    with torch.no_grad():
        outputs = _flat_tensors(wrapped(*example_inputs))
    out_names = ["output"] + [f"output{i}" for i in range(1, len(outputs))]
    axes = {}
    for name, tensor in zip(names, example_inputs):
        axes[name] = {0: "batch"}
        if not tensor.is_floating_point() and tensor.dim() >= 2:
            axes[name][1] = "sequence"
    axes.update({n: {0: "batch"} for n in out_names})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            tuple(example_inputs),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=out_names,
            dynamic_axes=axes,
            do_constant_folding=True,
            custom_opsets={"com.microsoft": 1},
        )
    model_proto = onnx.load_from_string(buffer.getvalue())
    unshare_initializers(model_proto)
    return model_proto.SerializeToString()


def node_module(node_name: str) -> str | None:
    """The module path of an exported node from its scoped name, e.g.
    ``/m/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1`` (``None`` outside the wrapper).

    The exporter names each scope after the module's attribute, writing ``parent.index`` for
    children of containers that are never called themselves (``ModuleList``) and repeating the
    container's name for ``Sequential`` children (``layer1/layer1.0``).

    Example:
        >>> node_module("/m/encoder/layer.0/attention/self/query/MatMul")
        'encoder.layer.0.attention.self.query'
    """
    parts = node_name.strip("/").split("/")[:-1]
    if not parts or parts[0] != EXPORT_PREFIX:
        return None
    path: list[str] = []
    for part in parts[1:]:
        head, _, tail = part.partition(".")
        if tail and path and path[-1] == head:
            path.append(tail)  # Sequential child written as "parent.index"
        else:
            path.append(part)
    return ".".join(path)


def nodes_of_modules(model: onnx.ModelProto, modules: Sequence[str]) -> list[str]:
    """Names of the exported nodes that belong to any of ``modules`` (module paths)."""
    wanted = set(modules)
    out = []
    for node in model.graph.node:
        owner = node_module(node.name)
        if owner is None:
            continue
        if owner in wanted or any(owner.startswith(w + ".") for w in wanted):
            out.append(node.name)
    return out


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
    nodes_to_exclude: Sequence[str] = (),
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
                nodes_to_exclude=list(nodes_to_exclude),
            )
        finally:
            root.setLevel(level)
        with open(dst, "rb") as f:
            return f.read()


def _feeds(session: ort.InferenceSession, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    names = [i.name for i in session.get_inputs()]
    return {n: as_feed(t) for n, t in zip(names, inputs)}


def build_static_int8(
    fp32: bytes,
    ranges: dict[str, tuple[float, float]],
    config: Any,
    feeds: dict[str, np.ndarray],
    nodes_to_exclude: Sequence[str] = (),
    threads: int = 0,
) -> OrtInt8Module:
    """The QDQ int8 graph of ``fp32`` with every activation range taken from ``ranges``.

    Args:
        fp32: the exported float graph.
        ranges: ``{tensor name: (lo, hi)}``, our observers' ranges.
        config: the ``PTQ`` config (weight / activation conventions).
        feeds: one input batch (ONNX Runtime runs a calibration pass that the overrides replace).
        nodes_to_exclude: node names kept in float.
        threads: intra-op threads of the session.
    """
    overrides = {
        name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
        for name, (lo, hi) in ranges.items()
    }
    int8 = _quantize_qdq(
        fp32,
        _OneBatchReader(feeds),
        per_channel=config.per_channel,
        symmetric_weights=config.symmetric_weights,
        symmetric_activations=config.symmetric_activations,
        overrides=overrides,
        nodes_to_exclude=nodes_to_exclude,
    )
    # ORT leaves zero pads (option-A shortcuts) in float; keep them in int8 (bit-exact)
    graph = onnx.load_from_string(int8)
    if quantize_zero_pads(graph):
        int8 = graph.SerializeToString()
    return OrtInt8Module(int8, threads)


def input_feeds(fp32: bytes, inputs: Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """``{graph input name: array}`` for one batch of positional inputs."""
    names = [i.name for i in onnx.load_from_string(fp32).graph.input]
    return {n: as_feed(t) for n, t in zip(names, inputs)}


class OrtCalibrator(Calibrator):
    """Observes every float tensor of the exported ONNX graph with our observers.

    Args:
        fp32: the exported float graph.
        config: the ``PTQ`` config.
        threads: intra-op threads of the int8 session.
        exclude_modules: module paths whose nodes stay float.
    """

    def __init__(
        self, fp32: bytes, config: Any, threads: int = 0, exclude_modules: Sequence[str] = ()
    ) -> None:
        self.fp32 = fp32
        self.config = config
        self.threads = threads
        model = onnx.load_from_string(fp32)
        self.nodes_to_exclude = nodes_of_modules(model, exclude_modules)
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
        self.ranges = {
            name: tuple(float(v) for v in obs.range())
            for name, obs in self.observers.items()
            if obs.batches
        }
        return build_static_int8(
            self.fp32, self.ranges, self.config, self.first_feeds, self.nodes_to_exclude,
            self.threads,
        )  # fmt: skip

    def rows(self) -> list[dict[str, Any]]:  # noqa: D102
        return [{"tensor": n, "min": lo, "max": hi} for n, (lo, hi) in self.ranges.items()]


@register_backend("onnxruntime")
class OrtBackend(Backend):
    """Export to ONNX, calibrate with our observers, write QDQ int8 and run it with ONNX Runtime.

    Layers the config's ``include`` / ``exclude`` / ``per_layer`` (or ``filter_fn``) leave out
    keep their ONNX nodes in float.
    """

    def prepare(
        self,
        model: nn.Module,
        config: Any,
        example_inputs: tuple[torch.Tensor, ...] | None,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> OrtCalibrator:  # noqa: D102
        from ..select import quantizable_layers

        if example_inputs is None:
            raise ValueError("the onnxruntime backend needs example inputs to export the model")
        _, skipped = quantizable_layers(model, config, filter_fn)
        return OrtCalibrator(
            export_fp32_onnx(model, example_inputs), config, exclude_modules=list(skipped)
        )


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
