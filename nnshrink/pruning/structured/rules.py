"""Channel-flow rules: how each traced operation moves, merges or fixes channel labels.

Used by :mod:`.graph` while it runs the traced model. Each rule receives the labels of its inputs
(an :class:`Info`: the channel axis and one label per channel) and the real tensors, and returns
the labels of its output. Rules call three methods of the graph: ``_fresh(n, fixed)`` (new labels),
``_union_lists(a, b)`` (couple channels) and ``_fix(labels)`` (channels that must stay).
A rule that cannot follow the channels safely fixes them: the op then sees unchanged inputs.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .layer_ops import supported_types


@dataclasses.dataclass
class Info:
    """Channel labels of one tensor: ``cdim`` is the channel axis (``None``: unlabelled tensor)."""

    cdim: int | None
    labels: list[int] | None = None


ANON = Info(None, None)

PASSTHROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign,
    nn.Tanhshrink, nn.Threshold, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.Dropout3d, nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d,
    nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d,
    nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d,
)  # fmt: skip

PASSTHROUGH_FUNCTIONS = (
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid,
    torch.sigmoid, torch.tanh, F.tanh, torch.exp, torch.abs, torch.neg, operator.neg,
    torch.clamp, torch.clip, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.max_pool1d,
    F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d, F.interpolate, torch.square, torch.sqrt,
)  # fmt: skip

PASSTHROUGH_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type_as",
    "abs", "exp", "neg", "square", "sqrt", "cpu", "cuda", "requires_grad_", "expand_as",
}  # fmt: skip

ELEMENTWISE = (
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
    torch.maximum, torch.minimum,
)  # fmt: skip
ELEMENTWISE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
REDUCE_FUNCTIONS = (torch.mean, torch.sum, torch.amax, torch.amin)
RESHAPE_METHODS = {"view", "reshape", "unsqueeze", "squeeze", "unflatten"}
RESHAPE_FUNCTIONS = (torch.reshape, torch.squeeze, torch.unsqueeze)


def supported_ops() -> str:
    """Human-readable list of what the graph can follow (for error messages)."""
    return (
        "layers " + ", ".join(supported_types()) + "; channel-preserving activations, pooling, "
        "dropout, identity; + - * / between feature maps (broadcast gates too); torch.cat; "
        "split/chunk; flatten/view/reshape/squeeze/unsqueeze; getitem; permute/transpose; "
        "mean/sum/amax/amin over non-channel axes; F.pad; softmax"
    )


def target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, list | tuple):
        return any(has_tensor(v) for v in value)
    return False


def flat_nodes(a: Any) -> list[fx.Node]:
    if isinstance(a, fx.Node):
        return [a]
    if isinstance(a, list | tuple):
        return [n for x in a for n in flat_nodes(x)]
    if isinstance(a, dict):
        return [n for x in a.values() for n in flat_nodes(x)]
    return []


def all_labels(info: Any) -> list[list[int]]:
    if isinstance(info, Info):
        return [info.labels] if info.labels else []
    if isinstance(info, list | tuple):
        return [ls for x in info for ls in all_labels(x)]
    return []


def anon_like(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ANON
    if isinstance(value, list | tuple):
        return [anon_like(v) for v in value]
    return None


def placeholder(graph: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return ANON
        axis = 1 if value.dim() > 1 else 0
        return Info(axis, graph._fresh(value.shape[axis], fixed=True))
    if isinstance(value, list | tuple):
        return [placeholder(graph, v) for v in value]
    return None


def carry(graph: Any, info: Any, x: Any, out: Any) -> Any:
    """Per-channel op: same labels if the channel axis survives unchanged, else fix them."""
    if not isinstance(info, Info) or info.cdim is None:
        return anon_like(out)
    if (
        isinstance(out, torch.Tensor)
        and isinstance(x, torch.Tensor)
        and out.dim() == x.dim()
        and out.shape[info.cdim] == x.shape[info.cdim]
    ):
        return info
    graph._fix(info.labels)
    return anon_like(out)


def softmax(graph: Any, info: Any, x: Any, out: Any, dim: Any) -> Any:
    if isinstance(info, Info) and info.cdim is not None and dim is not None:
        if dim % x.dim() == info.cdim:
            graph._fix(info.labels)  # normalising across channels: removing one changes all
    return carry(graph, info, x, out)


def elementwise(graph: Any, operands: list[tuple[Any, Any]], out: Any) -> Any:
    """Broadcasting binary op: channels on the same (right-aligned) axis are coupled."""
    if not isinstance(out, torch.Tensor):
        return None
    tensors = [(t, i) for t, i in operands if isinstance(t, torch.Tensor)]
    d = out.dim()
    out_axis, labels = None, None
    for t, info in tensors:
        if isinstance(info, Info) and info.cdim is not None:
            axis = info.cdim + d - t.dim()
            if t.shape[info.cdim] == out.shape[axis]:
                out_axis, labels = axis, info.labels
                break
    if out_axis is None:
        for _, info in tensors:
            graph._fix_nested(info)
        return ANON
    for t, info in tensors:
        offset = d - t.dim()
        here = out_axis - offset  # axis of t that lines up with the output channels
        size = t.shape[here] if 0 <= here < t.dim() else 1
        if isinstance(info, Info) and info.cdim is not None:
            if info.cdim == here:
                if size == out.shape[out_axis]:
                    graph._union_lists(labels, info.labels)
                continue  # size 1: broadcast gate, nothing to couple
            if t.shape[info.cdim] > 1:
                graph._fix(info.labels)
        if size != 1:
            graph._fix(labels)  # an unlabelled tensor (constant, buffer) spans the channels
    return Info(out_axis, labels)


def cat(graph: Any, tensors: Any, infos: Any, dim: int, out: Any) -> Any:
    infos = list(infos) if isinstance(infos, list | tuple) else [None] * len(tensors)
    d = dim % out.dim()
    if any(isinstance(i, Info) and i.cdim == d for i in infos):
        labels: list[int] = []
        for t, info in zip(tensors, infos):
            labels += graph._along(info, t, d)
        return Info(d, labels)
    return elementwise(graph, list(zip(tensors, infos)), out) if tensors else ANON


def split(graph: Any, info: Any, x: Any, out: Any, dim: int, dynamic: bool) -> Any:
    if not isinstance(info, Info) or info.cdim is None:
        return [ANON for _ in out]
    if dim % x.dim() != info.cdim:
        return [carry(graph, info, x, t) for t in out]
    pieces, start = [], 0
    for t in out:
        pieces.append(info.labels[start : start + t.shape[info.cdim]])
        start += t.shape[info.cdim]
    if dynamic and len({len(p) for p in pieces}) == 1 and len(pieces) > 1:
        # chunk(k) (or split by a size computed from the input) stays valid iff every piece keeps
        # the same number of channels
        graph.constraints.append((f"chunk/split into {len(pieces)} pieces", pieces))
    elif len(pieces) > 1:
        graph._fix(info.labels)  # literal split sizes would no longer match after pruning
    return [Info(info.cdim, p) for p in pieces]


def getitem(graph: Any, info: Any, x: Any, idx: Any, out: Any) -> Any:
    if isinstance(info, list):
        return info[idx] if isinstance(idx, int | slice) else anon_like(out)
    if not isinstance(x, torch.Tensor):
        return anon_like(out)
    if not isinstance(info, Info) or info.cdim is None:
        return anon_like(out)
    items = idx if isinstance(idx, tuple) else (idx,)
    consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    expanded: list[Any] = []
    for it in items:
        if it is Ellipsis:
            expanded += [slice(None)] * (x.dim() - consuming)
        else:
            expanded.append(it)
    c, labels = info.cdim, info.labels
    in_axis = out_axis = 0
    new_c = None
    for it in expanded:
        if it is None:
            out_axis += 1
            continue
        if isinstance(it, bool) or not isinstance(it, int | slice):
            graph._fix(labels)  # advanced indexing
            return anon_like(out)
        if isinstance(it, int):
            if in_axis == c:
                graph._fix(labels)  # picks one channel by position
                return anon_like(out)
            in_axis += 1
            continue
        if in_axis == c:
            if it.indices(len(labels)) != (0, len(labels), 1):
                graph._fix(labels)  # a literal channel slice would shift after pruning
                labels = labels[it]
            new_c = out_axis
        in_axis += 1
        out_axis += 1
    if new_c is None:
        new_c = out_axis + (c - in_axis)
    return Info(new_c, labels)


def flatten(info: Any, x: Any, out: Any, start: int, end: int) -> Any:
    if not isinstance(info, Info) or info.cdim is None:
        return anon_like(out)
    d = x.dim()
    s, e, c = start % d, end % d, info.cdim
    if c < s:
        return info
    if c > e:
        return Info(c - (e - s), info.labels)
    outer = math.prod(x.shape[s:c])
    inner = math.prod(x.shape[c + 1 : e + 1])
    # feature f of the flattened axis comes from channel (f // inner) % C
    labels = [label for _ in range(outer) for label in info.labels for _ in range(inner)]
    return Info(s, labels)


def axis_groups(ins: list[int], outs: list[int]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input axes with runs of output axes that have equal products (a reshape)."""
    groups: list[tuple[list[int], list[int]]] = []
    i = j = 0
    while i < len(ins) and j < len(outs):
        pi, pj, a, b = ins[i], outs[j], [i], [j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(ins):
                pi *= ins[i]
                a.append(i)
                i += 1
            elif pj < pi and j < len(outs):
                pj *= outs[j]
                b.append(j)
                j += 1
            else:
                return None
        groups.append((a, b))
    if not groups:
        return None
    groups[-1][0].extend(range(i, len(ins)))
    groups[-1][1].extend(range(j, len(outs)))
    return groups


def reshape(graph: Any, info: Any, x: Any, out: Any, shape_args: Any) -> Any:
    """view/reshape/(un)squeeze: follow the channel axis if it is moved or flattened, else fix."""
    if not isinstance(info, Info) or info.cdim is None or not isinstance(out, torch.Tensor):
        return anon_like(out)
    ins, outs, c = list(x.shape), list(out.shape), info.cdim
    result = None
    groups = axis_groups(ins, outs)
    for a, b in groups or ():
        if c not in a:
            continue
        a_big = [k for k in a if ins[k] != 1]
        b_big = [k for k in b if outs[k] != 1]
        if len(b_big) == 1 and c in a_big:
            outer = math.prod(ins[k] for k in a if k < c)
            inner = math.prod(ins[k] for k in a if k > c)
            labels = [lb for _ in range(outer) for lb in info.labels for _ in range(inner)]
            result = Info(b_big[0], labels)
    if result is None:
        graph._fix(info.labels)
        return ANON
    if shape_args is not None and result.cdim < len(shape_args):
        size = shape_args[result.cdim]
        if isinstance(size, int) and size != -1:
            graph._fix(result.labels)  # a literal size would not shrink with the channels
    return result


def reduce(graph: Any, info: Any, x: Any, out: Any, dim: Any, keepdim: bool) -> Any:
    if not isinstance(info, Info) or info.cdim is None:
        return anon_like(out)
    if dim is None:
        graph._fix(info.labels)
        return anon_like(out)
    dims = {d % x.dim() for d in (dim if isinstance(dim, list | tuple) else (dim,))}
    if info.cdim in dims:
        graph._fix(info.labels)
        return anon_like(out)
    shift = 0 if keepdim else sum(1 for d in dims if d < info.cdim)
    return Info(info.cdim - shift, info.labels)


def permute(info: Any, x: Any, dims: list[int]) -> Any:
    if not isinstance(info, Info) or info.cdim is None:
        return ANON
    dims = [d % x.dim() for d in dims]
    return Info(dims.index(info.cdim), info.labels)


def transpose(info: Any, x: Any, d0: int, d1: int) -> Any:
    if not isinstance(info, Info) or info.cdim is None:
        return ANON
    d0, d1, c = d0 % x.dim(), d1 % x.dim(), info.cdim
    return Info(d1 if c == d0 else d0 if c == d1 else c, info.labels)


def pad(graph: Any, info: Any, x: Any, out: Any, pad: Any, mode: str) -> Any:
    if not isinstance(info, Info) or info.cdim is None:
        return anon_like(out)
    pad = list(pad)
    k = x.dim() - 1 - info.cdim  # pad pairs run from the last axis backwards
    if 2 * k + 1 >= len(pad) or (pad[2 * k] == 0 and pad[2 * k + 1] == 0):
        return carry(graph, info, x, out)
    before, after = pad[2 * k], pad[2 * k + 1]
    if mode != "constant" or before < 0 or after < 0:
        graph._fix(info.labels)
        return anon_like(out)
    # padded channels are constants with literal counts: they stay, the real ones may go
    return Info(
        info.cdim,
        graph._fresh(before, fixed=True) + info.labels + graph._fresh(after, fixed=True),
    )
