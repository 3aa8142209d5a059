"""Channel-flow rules: how each traced operation moves, merges or fixes channel labels.

Used by :mod:`.graph` while it runs the traced model. Each rule receives the labels of its inputs
(an :class:`Info`: the channel axis and one label per channel) and the real tensors, and returns
the labels of its output. Rules call a few methods of the graph: ``_fresh(n, fixed)`` (new
labels), ``_union_lists(a, b)`` (couple channels), ``_fix(labels)`` (channels that must stay),
``_split(...)`` (a channel axis split into heads) and ``_param_port(...)`` (a parameter used
directly, e.g. a ViT's position embedding). A rule that cannot follow the channels safely fixes
them: the op then sees unchanged inputs.

Two further kinds of labels exist for short stretches of a graph:

* :class:`Multi`: channels spread over several axes, e.g. ``qkv.reshape(B, N, 3, H, D)`` has one
  unit per (q/k/v, head) on axes (2, 3). Only reshape, permute/transpose, getitem/select/unbind
  and the shape-preserving copies understand it; :func:`sanitize` fixes it before any other op.
* :class:`ParamRef`: a parameter or buffer used in the forward directly (not inside a layer);
  elementwise ops and ``cat`` turn it into a slice of that parameter along the channel axis,
  any other op sees an unlabelled constant.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layer_ops import supported_types


@dataclasses.dataclass
class Info:
    """Channel labels of one tensor: ``cdim`` is the channel axis (``None``: unlabelled tensor)."""

    cdim: int | None
    labels: list[int] | None = None


@dataclasses.dataclass
class Multi:
    """Channel units over several axes (row-major over ``axes``), e.g. (q/k/v, head)."""

    axes: tuple[int, ...]
    sizes: tuple[int, ...]
    labels: list[int]


@dataclasses.dataclass
class ParamRef:
    """A parameter or buffer used directly: ``owner.attr``; ``offset`` leading axes were added."""

    owner: str
    module: nn.Module
    attr: str
    tensor: torch.Tensor
    offset: int = 0


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
#: modules with a rule in the graph (besides registered layers): traced as leaves
RULE_MODULES = (*PASSTHROUGH_MODULES, nn.Flatten, nn.Unflatten, nn.Softmax, nn.LogSoftmax,
                nn.Softmin)  # fmt: skip

PASSTHROUGH_FUNCTIONS = (
    torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid,
    torch.sigmoid, torch.tanh, F.tanh, torch.exp, torch.abs, torch.neg, operator.neg,
    torch.clamp, torch.clip, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.max_pool1d,
    F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d, F.interpolate, torch.square, torch.sqrt, torch.rsqrt, torch.erf,
    torch.cos, torch.sin, torch.log, torch.isnan, torch.isinf, torch.isfinite, torch.zeros_like,
    torch.ones_like, torch.empty_like, torch.full_like, torch.rand_like, torch.randn_like,
    torch.nan_to_num,
    # the torch.* spellings of the functional ops above (torch.max_pool2d is not F.max_pool2d)
    torch.max_pool1d, torch.max_pool2d, torch.max_pool3d, torch.avg_pool1d,
    torch.adaptive_avg_pool1d, torch.adaptive_max_pool1d, torch.dropout, torch.feature_dropout,
    torch.alpha_dropout, torch.selu, torch.celu,
    # x / ||x||: a removed (zeroed) channel adds nothing to the norm, so keeping the other
    # channels' values unchanged is exact, as for an elementwise op
    F.normalize,
)  # fmt: skip

PASSTHROUGH_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type_as",
    "abs", "exp", "neg", "square", "sqrt", "cpu", "cuda", "requires_grad_", "expand_as",
    "__neg__", "__abs__", "rsqrt", "erf", "cos", "sin", "log", "type", "isnan", "isinf",
    "isfinite", "data", "zero_", "fill_", "nan_to_num", "sign", "masked_fill_",
}  # fmt: skip

ELEMENTWISE = (
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
    torch.maximum, torch.minimum, torch.pow, operator.pow, torch.where, torch.masked_fill,
    torch.true_divide, torch.rsub,
)  # fmt: skip
ELEMENTWISE_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "pow_", "where",
    "masked_fill", "true_divide", "maximum", "minimum", "rsub",
    "__add__", "__radd__", "__iadd__", "__sub__", "__rsub__", "__isub__", "__mul__",
    "__rmul__", "__imul__", "__truediv__", "__rtruediv__", "__itruediv__", "__pow__",
    "__rpow__", "__and__", "__or__", "__rand__", "__ror__", "__xor__",
}  # fmt: skip
#: methods making a new tensor unrelated to the channels of ``self`` (only its dtype/device)
CREATION_METHODS = {"new_zeros", "new_ones", "new_full", "new_empty", "new_tensor"}
REDUCE_METHODS = {"mean", "sum", "amax", "amin", "var", "std", "any", "all", "norm", "prod"}
REDUCE_FUNCTIONS = (torch.mean, torch.sum, torch.amax, torch.amin, torch.var, torch.std,
                    torch.any, torch.all, torch.prod)  # fmt: skip
RESHAPE_METHODS = {"view", "reshape", "unsqueeze", "squeeze", "unflatten"}
RESHAPE_FUNCTIONS = (torch.reshape, torch.squeeze, torch.unsqueeze)
#: ops that understand :class:`Multi` / :class:`ParamRef` labels (others see them sanitized)
MULTI_AWARE = {"reshape", "permute", "transpose", "getitem", "unbind", "select", "copy"}
PARAM_AWARE = {"elementwise", "cat", "copy", "expand"}


def supported_ops() -> str:
    """Human-readable list of what the graph can follow (for error messages)."""
    return (
        "layers " + ", ".join(supported_types()) + "; channel-preserving activations, pooling, "
        "dropout, identity; + - * / between feature maps (broadcast gates too); torch.cat; "
        "split/chunk; flatten/view/reshape/squeeze/unsqueeze/expand; getitem; permute/transpose; "
        "mean/sum/amax/amin over non-channel axes; F.pad; softmax; matmul and "
        "scaled_dot_product_attention over heads"
    )


def target_name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


def has_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, list | tuple):
        return any(has_tensor(v) for v in value)
    return False


def all_labels(info: Any) -> list[list[int]]:
    if isinstance(info, Info | Multi):
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


def sanitize(graph: Any, info: Any, multi: bool, param: bool) -> Any:
    """Fix :class:`Multi` labels / drop :class:`ParamRef` for ops that do not understand them."""
    if isinstance(info, Multi) and not multi:
        graph._fix(info.labels)
        return ANON
    if isinstance(info, ParamRef) and not param:
        return None  # an unlabelled constant, as a parameter always was
    if isinstance(info, list | tuple):
        return [sanitize(graph, i, multi, param) for i in info]
    return info


def placeholder(graph: Any, value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if value.dim() == 0:
            return ANON
        axis = 1 if value.dim() > 1 else 0
        return Info(axis, graph._fresh(value.shape[axis], fixed=True))
    if isinstance(value, list | tuple):
        return [placeholder(graph, v) for v in value]
    if isinstance(value, dict):
        return {k: placeholder(graph, v) for k, v in value.items()}
    return None


def carry(graph: Any, info: Any, x: Any, out: Any) -> Any:
    """Per-channel op: same labels if the channel axis survives unchanged, else fix them."""
    if isinstance(info, Multi):
        if isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor) and out.shape == x.shape:
            return info
        graph._fix(info.labels)
        return anon_like(out)
    if isinstance(info, ParamRef):
        same = isinstance(out, torch.Tensor) and out.dim() == x.dim()
        return info if same else None
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


def expand(graph: Any, info: Any, x: Any, out: Any) -> Any:
    """``expand``: new leading axes shift the channel axis; existing sizes > 1 never change."""
    if not isinstance(out, torch.Tensor) or not isinstance(x, torch.Tensor):
        return anon_like(out)
    shift = out.dim() - x.dim()
    if isinstance(info, ParamRef):
        return dataclasses.replace(info, offset=info.offset + shift)
    if isinstance(info, Info) and info.cdim is not None:
        if x.shape[info.cdim] == out.shape[info.cdim + shift]:
            return Info(info.cdim + shift, info.labels)
        graph._fix(info.labels)
    return anon_like(out)


def softmax(graph: Any, info: Any, x: Any, out: Any, dim: Any) -> Any:
    if isinstance(info, Info) and info.cdim is not None and dim is not None:
        if dim % x.dim() == info.cdim:
            graph._fix(info.labels)  # normalising across channels: removing one changes all
    return carry(graph, info, x, out)


def _aligned_param(graph: Any, ref: ParamRef, t: torch.Tensor, here: int, labels: list[int],
                   size: int) -> bool:  # fmt: skip
    """Make ``ref`` a slice of its parameter along the axis that lines up with the channels."""
    axis = here - ref.offset
    param = ref.tensor
    if 0 <= axis < param.dim() and param.shape[axis] == size == t.shape[here]:
        graph._param_port(ref, axis, labels)
        return True
    return False


def elementwise(graph: Any, operands: list[tuple[Any, Any]], out: Any) -> Any:
    """Broadcasting op: channels on the same (right-aligned) axis are coupled."""
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
        if isinstance(info, ParamRef) and size != 1:
            if _aligned_param(graph, info, t, here, labels, out.shape[out_axis]):
                continue
        if size != 1:
            graph._fix(labels)  # an unlabelled tensor (constant, buffer) spans the channels
    return Info(out_axis, labels)


def cat(graph: Any, tensors: Any, infos: Any, dim: int, out: Any) -> Any:
    infos = list(infos) if isinstance(infos, list | tuple) else [None] * len(tensors)
    d = dim % out.dim()
    if any(isinstance(i, Info) and i.cdim == d for i in infos):
        labels: list[int] = []
        for t, info in zip(tensors, infos):
            labels += graph._along(None if isinstance(info, ParamRef) else info, t, d)
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


def reshape(graph: Any, info: Any, x: Any, out: Any, shape_args: Any, literal: Any) -> Any:
    """view/reshape/(un)squeeze: follow the channel axis if it is moved, flattened or split
    into heads, else fix.

    Args:
        literal: ``fn(axis) -> bool``: whether the output size on ``axis`` was written as a
            literal (only fx knows; ``None`` when unknown).
    """
    if isinstance(info, Multi):
        return _reshape_multi(graph, info, x, out)
    if not isinstance(info, Info) or info.cdim is None or not isinstance(out, torch.Tensor):
        return anon_like(out)
    ins, outs, c = list(x.shape), list(out.shape), info.cdim
    result = None
    for a, b in axis_groups(ins, outs) or ():
        if c not in a:
            continue
        a_big = [k for k in a if ins[k] != 1]
        b_big = [k for k in b if outs[k] != 1]
        if a_big == [c] and len(b_big) == 1 and graph._one_head(outs, b, b_big):
            # (C) -> (1, D) with D the module's head_dim: one head left (GQA after pruning)
            result = graph._split(info.labels, [1, outs[b_big[0]]], [b[b.index(b_big[0]) - 1],
                                  b_big[0]], literal)  # fmt: skip
        elif len(b_big) == 1 and (c in a_big or ins[c] == 1):
            outer = math.prod(ins[k] for k in a if k < c)
            inner = math.prod(ins[k] for k in a if k > c)
            labels = [lb for _ in range(outer) for lb in info.labels for _ in range(inner)]
            result = Info(b_big[0], labels)
            size = outs[b_big[0]]
            if literal is not None and literal(result.cdim) and not graph._width_backed(size):
                graph._fix(result.labels)  # a literal size would not shrink with the channels
        elif a_big == [c] and len(b_big) >= 2:
            # a split of the channel axis, (C) -> (H, D) or (3, H, D): units over all but the
            # last new axis (heads), whole blocks of D channels per unit
            result = graph._split(info.labels, [outs[k] for k in b_big], b_big, literal)
    if result is None:
        graph._fix(info.labels)
        return ANON
    return result


def _reshape_multi(graph: Any, info: Multi, x: Any, out: Any) -> Any:
    """Units over several axes survive a reshape that keeps each unit axis whole and alone."""
    ins, outs = list(x.shape), list(out.shape)
    mapping: dict[int, int] = {}
    for a, b in axis_groups(ins, outs) or ():
        a_big = [k for k in a if ins[k] != 1]
        b_big = [k for k in b if outs[k] != 1]
        for k in a_big:
            if k in info.axes:
                if len(a_big) != 1 or len(b_big) != 1:
                    graph._fix(info.labels)  # a unit axis merged or split again
                    return anon_like(out)
                mapping[k] = b_big[0]
    if set(mapping) != set(info.axes):
        graph._fix(info.labels)
        return anon_like(out)
    return Multi(tuple(mapping[a] for a in info.axes), info.sizes, info.labels)


def reduce(graph: Any, info: Any, x: Any, out: Any, dim: Any, keepdim: bool) -> Any:
    if not isinstance(info, Info) or info.cdim is None:
        return anon_like(out)
    if dim is None:
        graph._fix(info.labels)
        return anon_like(out)
    dims = {d % x.dim() for d in (dim if isinstance(dim, list | tuple) else (dim,))}
    if info.cdim in dims:
        if not (keepdim and graph.allow_stats):
            graph._fix(info.labels)
        # with prune_hidden: a statistic over the channels (a norm's mean/variance) is broadcast
        # back; it changes when channels go, but its shape does not
        return anon_like(out)
    shift = 0 if keepdim else sum(1 for d in dims if d < info.cdim)
    return Info(info.cdim - shift, info.labels)


def permute(info: Any, x: Any, dims: list[int]) -> Any:
    dims = [d % x.dim() for d in dims]
    if isinstance(info, Multi):
        return Multi(tuple(dims.index(a) for a in info.axes), info.sizes, info.labels)
    if not isinstance(info, Info) or info.cdim is None:
        return ANON
    return Info(dims.index(info.cdim), info.labels)


def transpose(info: Any, x: Any, d0: int, d1: int) -> Any:
    d0, d1 = d0 % x.dim(), d1 % x.dim()
    dims = list(range(x.dim()))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return permute(info, x, dims)


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
