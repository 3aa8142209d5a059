"""Function and tensor-method calls: which rule of :mod:`.rules` follows each one.

The two tracers name the same operation differently (fx: ``operator.add``, ``call_method
'view'``; eager: ``Tensor.add``, ``Tensor.__radd__``, ``Tensor.shape.__get__``); :func:`category`
maps both onto one rule. Unknown calls that reach prunable channels are reported (or, with
``strict=False``, their channels kept).

Example:
    >>> import operator
    >>> category("method", "__radd__"), category("function", operator.add)
    ('elementwise', 'elementwise')
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F

from . import rules as R
from . import rules_attention as A
from . import rules_index as RI

_COMPARE = {"eq", "ne", "lt", "le", "gt", "ge", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
            "__ge__", "logical_and", "logical_or", "logical_not", "__invert__"}  # fmt: skip
_COMPARE_FUNCTIONS = (operator.eq, operator.ne, operator.lt, operator.le, operator.gt,
                      operator.ge, torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
                      torch.logical_and, torch.logical_or, torch.logical_not)  # fmt: skip
_BY_METHOD = {
    **{m: "copy" for m in R.PASSTHROUGH_METHODS},
    **{m: "elementwise" for m in R.ELEMENTWISE_METHODS | _COMPARE},
    **{m: "creation" for m in R.CREATION_METHODS},
    **{m: "reduce" for m in R.REDUCE_METHODS},
    **{m: "reshape" for m in R.RESHAPE_METHODS},
    "split": "split", "chunk": "split", "unbind": "unbind", "select": "select",
    "__getitem__": "getitem", "__setitem__": "setitem", "flatten": "flatten",
    "permute": "permute", "transpose": "transpose", "swapaxes": "transpose",
    "swapdims": "transpose", "T": "T", "mT": "mT", "expand": "expand", "expand_as": "expand",
    "softmax": "softmax", "log_softmax": "softmax", "matmul": "matmul", "__matmul__": "matmul",
    "__rmatmul__": "rmatmul", "bmm": "matmul", "masked_fill": "elementwise",
    "size": "none", "dim": "none", "numel": "none", "shape": "none", "dtype": "none",
    "device": "none", "is_floating_point": "none", "item": "none", "tolist": "none",
    "__bool__": "none", "__len__": "none", "__index__": "none", "__int__": "none",
    "__float__": "none", "is_contiguous": "none", "data_ptr": "none", "stride": "none",
    "get_device": "none", "element_size": "none", "requires_grad": "none",
    "__format__": "none", "__repr__": "none", "__hash__": "none", "ndim": "none",
}  # fmt: skip
_BY_FUNCTION = {
    **{f: "copy" for f in R.PASSTHROUGH_FUNCTIONS},
    **{f: "elementwise" for f in R.ELEMENTWISE + _COMPARE_FUNCTIONS},
    **{f: "reduce" for f in R.REDUCE_FUNCTIONS},
    **{f: "reshape" for f in R.RESHAPE_FUNCTIONS},
    torch.cat: "cat", torch.concat: "cat", torch.concatenate: "cat", torch.stack: "stack",
    torch.split: "split", torch.chunk: "split", torch.unbind: "unbind", torch.select: "select",
    operator.getitem: "getitem", torch.flatten: "flatten", torch.permute: "permute",
    torch.transpose: "transpose", torch.swapaxes: "transpose", F.pad: "pad",
    torch.softmax: "softmax", F.softmax: "softmax", torch.log_softmax: "softmax",
    F.log_softmax: "softmax", torch.matmul: "matmul", operator.matmul: "matmul",
    torch.bmm: "matmul", F.scaled_dot_product_attention: "sdpa", F.linear: "linear",
    F.layer_norm: "layer_norm", F.embedding: "embedding", torch.broadcast_to: "expand",
    torch.arange: "none", torch.tensor: "none", torch.zeros: "none", torch.ones: "none",
    torch.full: "none", torch.empty: "none", torch.finfo: "none",
}  # fmt: skip
if hasattr(F, "rms_norm"):
    _BY_FUNCTION[F.rms_norm] = "layer_norm"
_MULTI_AWARE = {"reshape", "permute", "transpose", "getitem", "unbind", "select", "copy"}
_PARAM_AWARE = {"elementwise", "cat", "stack", "copy", "expand", "linear", "layer_norm",
                "embedding"}  # fmt: skip


def category(kind: str, target: Any) -> str:
    """The rule that follows a call: ``"elementwise"``, ``"reshape"``, ... or ``"unknown"``."""
    if kind == "method":
        return _BY_METHOD.get(target, "unknown")
    try:
        return _BY_FUNCTION.get(target, "unknown")
    except TypeError:  # unhashable callables
        return "unknown"


def visit_function(graph: Any, call: Any) -> Any:
    """Labels of the result of one function / method call (see :func:`category`)."""
    cat = category(call.kind, call.target)
    out = call.out
    if cat == "setitem":
        graph._fix_nested(R.sanitize(graph, call.infos, False, False))
        return None
    if cat == "none" or not R.has_tensor(out):
        return None
    multi, param = cat in _MULTI_AWARE, cat in _PARAM_AWARE
    infos = [R.sanitize(graph, i, multi, param) for i in call.infos]
    kw_infos = {k: R.sanitize(graph, v, multi, param) for k, v in call.kw_infos.items()}
    args, kwargs = call.args, call.kwargs
    first = infos[0] if infos else None
    x = args[0] if args else None

    def get(i: int, key: str, default: Any = None) -> Any:
        return args[i] if len(args) > i else kwargs.get(key, default)

    def info(i: int, key: str) -> Any:
        return infos[i] if len(infos) > i else kw_infos.get(key)

    if cat == "creation":
        return R.anon_like(out)
    if cat == "copy":
        return R.carry(graph, first, x, out)
    if cat == "elementwise":
        operands = list(zip(args, infos)) + [(kwargs.get(k), kw_infos.get(k)) for k in kwargs]
        return R.elementwise(graph, operands, out)
    if cat == "cat":
        return R.cat(graph, get(0, "tensors"), info(0, "tensors"), get(1, "dim", 0), out)
    if cat == "stack":
        return _stack(graph, get(0, "tensors"), info(0, "tensors"), get(1, "dim", 0), out)
    if cat == "split" and isinstance(out, tuple | list):
        if call.target in ("chunk", torch.chunk):
            dim, dynamic = get(2, "dim", 0), True
        else:
            dim = get(2, "dim", 0)
            dynamic = call.literal(1, "split_size_or_sections") is not True
        return R.split(graph, first, x, out, dim, dynamic)
    if cat == "unbind":
        return RI.unbind(graph, first, x, get(1, "dim", 0), out)
    if cat == "select":
        dim, index = get(1, "dim"), get(2, "index")
        idx = (slice(None),) * (dim % x.dim()) + (index,)
        return RI.getitem(graph, first, x, idx, out)
    if cat == "getitem":
        return RI.getitem(graph, first, x, get(1, "idx"), out)
    if cat == "flatten":
        return R.flatten(first, x, out, get(1, "start_dim", 0), get(2, "end_dim", -1))
    if cat == "reshape":
        return R.reshape(graph, first, x, out, None, _size_literal(call, out))
    if cat == "reduce":
        return R.reduce(graph, first, x, out, get(1, "dim"), get(2, "keepdim", False))
    if cat == "permute":
        dims = get(1, "dims")
        dims = list(dims) if isinstance(dims, list | tuple) else list(args[1:])
        return R.permute(first, x, dims)
    if cat == "transpose":
        return R.transpose(first, x, get(1, "dim0"), get(2, "dim1"))
    if cat in ("T", "mT"):
        return R.transpose(first, x, -2, -1) if x.dim() >= 2 else first
    if cat == "expand":
        return R.expand(graph, first, x, out)
    if cat == "pad":
        return R.pad(graph, first, x, out, get(1, "pad"), get(2, "mode", "constant"))
    if cat == "softmax":
        return R.softmax(graph, first, x, out, get(1, "dim"))
    if cat in ("matmul", "rmatmul"):
        (a, ai), (b, bi) = (args[0], first), (args[1], info(1, "other"))
        if cat == "rmatmul":
            (a, ai), (b, bi) = (b, bi), (a, ai)
        return A.matmul(graph, ai, a, bi, b, out)
    if cat == "sdpa":
        names = ("query", "key", "value", "attn_mask")
        tensors = [get(i, n) for i, n in enumerate(names)]
        labels = [info(i, n) for i, n in enumerate(names)]
        return A.sdpa(graph, labels, tensors, bool(kwargs.get("enable_gqa", False)), out)
    if cat == "linear":
        return _linear(graph, call, first, x, info(1, "weight"), info(2, "bias"), out)
    if cat == "layer_norm":
        return _layer_norm(graph, call, first, x, info(2, "weight"), info(3, "bias"), out)
    if cat == "embedding":
        return _embedding(graph, call, info(1, "weight"), out)
    graph._unknown_op(call.where, list(infos) + list(kw_infos.values()))
    return R.anon_like(out)


def _size_literal(call: Any, out: torch.Tensor):
    """``fn(axis)``: whether the output size on ``axis`` of a view/reshape is a literal."""
    if call.target not in ("view", "reshape", torch.reshape):
        return None
    args = call.args[1:]
    nested = len(args) == 1 and isinstance(args[0], list | tuple)
    sizes = list(args[0]) if nested else list(args)

    def literal(axis: int) -> bool | None:
        if axis >= len(sizes) or sizes[axis] == -1:
            return False
        return call.literal(1 if nested else 1 + axis, "shape", axis if nested else None)

    probe = literal(0) if sizes else None
    return None if probe is None and sizes else literal


def _stack(graph: Any, tensors: Any, infos: Any, dim: int, out: Any) -> Any:
    """``torch.stack``: a new axis; channels on the same axis of every operand are coupled."""
    d = dim % out.dim()
    infos = list(infos) if isinstance(infos, list | tuple) else [None] * len(tensors)
    labelled = [i for i in infos if isinstance(i, R.Info) and i.cdim is not None]
    if not labelled:
        for i in infos:
            graph._fix_nested(i)
        return R.ANON
    c = labelled[0].cdim
    for i in infos:
        if isinstance(i, R.Info) and i.cdim == c:
            graph._union_lists(labelled[0].labels, i.labels)
        else:
            graph._fix(labelled[0].labels)
            graph._fix_nested(i)
    return R.Info(c + (c >= d), labelled[0].labels)


def _owner_ops(ref: Any):
    from .layer_ops import ops_for
    from .tracing import _registered_class

    return ops_for(ref.module) if _registered_class(ref.module) is not None else None


def _linear(graph, call, info, x, w, b, out) -> Any:
    """``F.linear(x, self.weight, self.bias)`` written in a module's own forward."""
    if not isinstance(w, R.ParamRef) or not isinstance(x, torch.Tensor):
        graph._unknown_op(call.where, [info, w, b])
        return R.anon_like(out)
    in_labels = graph._along(info, x, x.dim() - 1)
    ops = _owner_ops(w)
    if ops is not None and ops.coupling == "independent" and ops.layout == "last":
        graph._port(w.module, w.owner, "in", in_labels)  # a Linear subclass: its own slicers
        return R.Info(out.dim() - 1, graph._port(w.module, w.owner, "out", None, out.shape[-1]))
    out_labels = graph._fresh(out.shape[-1])
    graph._param_port(w, 0, out_labels)
    graph._param_port(w, 1, in_labels)
    if isinstance(b, R.ParamRef):
        graph._param_port(b, 0, out_labels)
    return R.Info(out.dim() - 1, out_labels)


def _layer_norm(graph, call, info, x, w, b, out) -> Any:
    """``F.layer_norm`` / ``F.rms_norm`` in a module's own forward (e.g. a LayerNorm2d)."""
    if not isinstance(info, R.Info) or info.cdim != x.dim() - 1:
        return R.carry(graph, info, x, out)
    ref = w if isinstance(w, R.ParamRef) else None
    ops = _owner_ops(ref) if ref is not None else None
    if ops is not None and ops.coupling == "shared":
        return R.Info(info.cdim, graph._port(ref.module, ref.owner, "out", info.labels))
    graph._unknown_op(call.where + " (normalized_shape is not a layer attribute)", [info])
    return R.anon_like(out)


def _embedding(graph, call, w, out) -> Any:
    if not isinstance(w, R.ParamRef):
        return R.anon_like(out)
    labels = graph._fresh(out.shape[-1])
    graph._param_port(w, 1, labels)
    return R.Info(out.dim() - 1, labels)
