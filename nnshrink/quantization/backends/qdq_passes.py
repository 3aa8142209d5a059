"""Graph passes over QDQ ONNX models that keep more of the graph in int8 (bytes in, bytes out).

ONNX Runtime fuses ``DequantizeLinear → op → QuantizeLinear`` into an integer kernel for the ops
it knows (Conv, MatMul, Add, pooling, ...). For a zero ``Pad`` — the option-A ResNet shortcut that
appends zero channels — it does not: the padded tensor is dequantized to float, padded, and
quantized again at every down-sampling block (two extra full-tensor passes). Padding the int8
tensor with the *zero point* gives bit-identical results, because ``quantize(0) == zero_point``
and ``quantize(dequantize(q)) == q`` for the same scale and zero point; :func:`quantize_zero_pads`
makes that rewrite. ORT's quantizer has no option for it, hence this pass.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper


def _constant_values(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers and ``Constant`` node outputs by name."""
    values = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = attr.t
    return values


def _same_value(values: dict[str, onnx.TensorProto], a: str, b: str) -> bool:
    if a == b:
        return True
    if a not in values or b not in values:
        return False
    x, y = numpy_helper.to_array(values[a]), numpy_helper.to_array(values[b])
    return x.dtype == y.dtype and x.shape == y.shape and bool((x == y).all())


def quantize_zero_pads(model: onnx.ModelProto) -> int:
    """Rewrite ``DequantizeLinear → Pad(0) → QuantizeLinear`` (same scale and zero point) as an
    int8 ``Pad`` whose constant is the zero point; in place.

    Only constant-mode pads with a zero (or absent) pad value and per-tensor quantization
    parameters are rewritten; everything else is left as it is.

    Args:
        model: a QDQ model (as written by ``onnxruntime.quantization.quantize_static``).

    Returns:
        The number of pads rewritten.

    Example:
        >>> m = onnx.load("resnet20-int8.onnx")  # doctest: +SKIP
        >>> quantize_zero_pads(m)  # doctest: +SKIP
        2
    """
    graph = model.graph
    values = _constant_values(model)
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}
    drop: list[onnx.NodeProto] = []
    rewritten = 0
    for pad in list(graph.node):
        if pad.op_type != "Pad" or pad.output[0] in graph_outputs:
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        dq = producer.get(pad.input[0])
        users = consumers.get(pad.output[0], [])
        if mode != b"constant" or dq is None or dq.op_type != "DequantizeLinear":
            continue
        if len(users) != 1 or users[0].op_type != "QuantizeLinear":
            continue
        q = users[0]
        if len(dq.input) < 3 or len(q.input) < 3:
            continue  # no zero point given: leave it
        scale, zero = dq.input[1], dq.input[2]
        if not (_same_value(values, scale, q.input[1]) and _same_value(values, zero, q.input[2])):
            continue
        if zero not in values or numpy_helper.to_array(values[zero]).size != 1:
            continue  # per-channel parameters: the pad value would differ per channel
        if len(pad.input) > 2 and pad.input[2]:
            fill = values.get(pad.input[2])
            if fill is None or numpy_helper.to_array(fill).any():
                continue
        zero_value = numpy_helper.to_array(values[zero]).reshape(())
        fill_name = f"{pad.name or pad.output[0]}_zero_point_fill"
        graph.initializer.append(numpy_helper.from_array(zero_value, fill_name))
        inputs = list(pad.input) + [""] * (3 - len(pad.input))
        inputs[0], inputs[2] = dq.input[0], fill_name
        del pad.input[:]
        pad.input.extend(inputs)
        pad.output[0] = q.output[0]
        drop.append(q)
        if len(consumers.get(dq.output[0], [])) == 1 and dq.output[0] not in graph_outputs:
            drop.append(dq)
        rewritten += 1
    for node in drop:
        graph.node.remove(node)
    return rewritten
