"""Dependency graph: trace a model and find which channel dimensions must be pruned together.

Level 0 of structured pruning. The model is run once on ``example_inputs`` by one of the tracers
of :mod:`.tracing` (torch.fx where it can trace the forward, else the eager tracer that reaches
Hugging Face models and ``nn.Transformer*``). While it runs, every tensor carries one *label*
per channel; channel-producing layers (conv/linear outputs, padded shortcut channels) create
fresh labels, channel-preserving ops pass labels on, and ops that tie channels together
(``+``/``*`` between feature maps, depthwise convs, a module called twice, ``cat`` along another
axis, attention pairing query, key and value heads) merge labels (union-find). Each module
dimension that would have to be sliced is recorded as a :class:`ChannelEdit` holding the label
of each of its positions; two edits are coupled iff they share a label. The per-operation rules
live in :mod:`.rules`, :mod:`.rules_attention` and :mod:`.functions`; ``group.py`` turns
connected edits into groups.

Attention is found in the graph, not by class name: a ``view``/``reshape`` that splits a
projection's channels into ``(heads, head_dim)`` makes each head one unit (its ``head_dim``
channels share one label, :class:`HeadSplit` records where), and the matrix products of
attention then pair query, key and value heads.

Channels that must never change are *fixed*: the model inputs, everything returned by the model
(so the final classifier keeps its outputs), channels sliced by a literal index (``x[:, :16]``),
split by literal sizes or reshaped to literal sizes (when fx can tell), and channels mixed by a
reduction or softmax over the channel axis.

Example:
    >>> g = DependencyGraph(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)),
    ...                     torch.zeros(1, 1, 8, 8))
    >>> [(e.name, e.dim, len(e.labels)) for e in g.edits]
    [('0', 'in', 1), ('0', 'out', 4), ('2', 'in', 4), ('2', 'out', 2)]
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import rules as R
from .functions import visit_function
from .heads import WIDTH_ATTRS
from .tracing import (
    Call,
    FxTraceError,
    VisitorError,
    flat_tensors,
    leaf_ops,
    no_fastpath,
    split_inputs,
    trace_eager,
    trace_fx,
)

__all__ = ["ChannelEdit", "DependencyGraph", "HeadSplit", "ModuleCall", "UnsupportedModelError"]

#: attributes that may hold an attention module's head count, next to a ``view(..., H, D)``
HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "heads", "nheads",
                    "num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head")  # fmt: skip


HEAD_DIM_ATTRS = ("head_dim", "attention_head_size", "head_size", "d_head", "dim_head")


class UnsupportedModelError(ValueError):
    """The model uses an operation that structured pruning cannot follow (nothing was edited)."""


@dataclasses.dataclass
class ChannelEdit:
    """One module dimension to slice: ``dim`` is ``"out"``, ``"in"``, a named dimension of the
    layer (``"heads"``) or ``"param:<attr>:<axis>"``; one label per position."""

    name: str
    module: nn.Module
    dim: str
    labels: list[int]


@dataclasses.dataclass
class HeadSplit:
    """Where a channel axis was split into heads: in the forward of module ``owner`` (qualified
    name), ``sizes`` units (heads, or q/k/v x heads) of ``head_dim`` channels, one label each."""

    owner: str
    head_dim: int
    sizes: tuple[int, ...]
    labels: list[int]


class ModuleCall:
    """What a custom layer rule (``register_layer_ops(..., trace=fn)``) sees of one layer call.

    Attributes:
        name, module: the layer; args, kwargs, out: the real call; infos: labels of each
        positional argument (pass them to :meth:`along`).
    """

    def __init__(self, graph: DependencyGraph, call: Call, infos: list[Any]) -> None:
        self._graph = graph
        self.name, self.module = call.target, call.module
        self.args, self.kwargs, self.out = call.args, call.kwargs, call.out
        self.infos = infos
        self.kw_infos = {k: R.sanitize(graph, v, False, False) for k, v in call.kw_infos.items()}
        self.where = call.where

    def arg(self, i: int, key: str) -> tuple[Any, Any]:
        """``(value, labels)`` of positional argument ``i`` or keyword ``key``."""
        if len(self.args) > i:
            return self.args[i], self.infos[i]
        return self.kwargs.get(key), self.kw_infos.get(key)

    def along(self, info: Any, x: torch.Tensor, axis: int) -> list[int]:
        """Labels of ``x`` along ``axis`` (fresh fixed ones when ``x`` has none there)."""
        return self._graph._along(info, x, axis % x.dim())

    def port(self, dim: str, labels: list[int] | None = None, size: int = 0) -> list[int]:
        """Record the layer dimension ``dim`` with these labels (or ``size`` fresh ones)."""
        return self._graph._port(self.module, self.name, dim, labels, size)

    def fresh(self, n: int, fixed: bool = False) -> list[int]:
        return self._graph._fresh(n, fixed)

    def union(self, a: list[int], b: list[int]) -> None:
        self._graph._union_lists(a, b)

    def fix(self, labels: list[int]) -> None:
        self._graph._fix(labels)

    def heads(self, labels: list[int]) -> None:
        """Mark ``labels`` as attention heads (their group is a head group)."""
        self._graph.head_labels.update(labels)

    def output(self, axis: int, labels: list[int]) -> R.Info:
        return R.Info(axis, labels)

    def unknown(self, why: str = "") -> Any:
        """Give up on this call: its channels are reported (or fixed with ``strict=False``)."""
        self._graph._unknown_op(self.where + (f" ({why})" if why else ""), self.infos)
        return R.anon_like(self.out)


class DependencyGraph:
    """Channel dependencies of ``model`` for ``example_inputs``.

    Attributes:
        edits: every module dimension to slice, in execution order.
        constraints: ``(why, blocks)``: lists of label blocks that must keep equal counts
            (grouped convs, ``GroupNorm``, ``chunk``).
        splits: the :class:`HeadSplit` of every attention projection.
        tracer: ``"fx"`` or ``"eager"`` (see :mod:`.tracing`).
        skipped: with ``strict=False``, why some channels were kept (one line per op).
        output_shapes: shapes of the model's output tensors on ``example_inputs``.

    Args:
        model: the model (left unchanged; run once in eval mode under ``torch.no_grad``).
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        ignore: ``(name, module) -> bool``; output channels of accepted modules are fixed.
        strict: raise on an operation the graph cannot follow (default); ``False`` keeps the
            channels reaching it and records why in :attr:`skipped`.
        allow_stats: let statistics over the channel axis (a norm's mean/variance, broadcast
            back with ``keepdim``) through; set by ``prune_hidden=True``.
        tracer: ``"auto"`` (fx, else eager), ``"fx"`` or ``"eager"``.

    Raises:
        UnsupportedModelError: the model cannot be run on ``example_inputs``, or (with
            ``strict``) a prunable channel reaches an operation the graph does not understand
            (the message names the op or module and how to get past it).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        *,
        ignore: Callable[[str, nn.Module], bool] | None = None,
        strict: bool = True,
        allow_stats: bool = False,
        tracer: str = "auto",
    ) -> None:
        self.model = model
        self.strict = strict
        self.allow_stats = allow_stats
        self._modules = dict(model.named_modules())
        args, kwargs = split_inputs(example_inputs)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad(), no_fastpath():
                self.tracer = self._trace(model, args, kwargs, tracer)
        finally:
            for m, mode in modes:
                m.training = mode
        for edit in self.edits:
            if ignore is not None and edit.dim == "out" and ignore(edit.name, edit.module):
                self._fix(edit.labels)
        self._check_literal_axes()
        self._check_unknown()

    def _reset(self) -> None:
        self.edits: list[ChannelEdit] = []
        self.constraints: list[tuple[str, list[list[int]]]] = []
        self.splits: list[HeadSplit] = []
        self.head_labels: set[int] = set()
        self.skipped: list[str] = []
        self.output_shapes: list[tuple[int, ...]] = []
        self._parent: list[int] = []
        self._fixed: list[bool] = []
        self._ports: dict[tuple[int, str], list[int]] = {}
        self._unknown: list[tuple[str, list[int]]] = []
        self._literal_axes: list[tuple[list[int], tuple[int, ...], int]] = []

    def _trace(self, model: nn.Module, args: tuple, kwargs: dict, tracer: str) -> str:
        fx_error = None
        if tracer in ("auto", "fx") and not kwargs:
            self._reset()
            try:
                trace_fx(model, args, kwargs, self)
                return "fx"
            except VisitorError as exc:
                raise exc.__cause__ from None
            except Exception as exc:  # not traceable (FxTraceError) or the traced run failed
                fx_error = exc if isinstance(exc, FxTraceError) else None
                if tracer == "fx":
                    raise UnsupportedModelError(
                        f"torch.fx could not trace {type(model).__name__}: {exc}. Use "
                        "tracer='auto' to run it eagerly instead."
                    ) from exc
        self._reset()
        try:
            trace_eager(model, args, kwargs, self)
        except VisitorError as exc:
            raise exc.__cause__ from None
        except Exception as exc:
            why = f" (torch.fx could not trace it either: {fx_error})" if fx_error else ""
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise UnsupportedModelError(
                f"{type(model).__name__} failed on example_inputs while being traced: "
                f"{type(exc).__name__}: {first}{why}. Pass the inputs the model takes (a "
                "tensor, a tuple of positional inputs or a dict of keyword inputs)."
            ) from exc
        return "eager"

    # ---------------------------------------------------------------- labels (union-find)
    def find(self, label: int) -> int:
        """Root label of ``label`` (coupled labels share a root)."""
        parent = self._parent
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = parent[label]
        return label

    def is_fixed(self, label: int) -> bool:
        """Whether the channel labelled ``label`` must be kept."""
        return self._fixed[self.find(label)]

    def _fresh(self, n: int, fixed: bool = False) -> list[int]:
        start = len(self._parent)
        self._parent.extend(range(start, start + n))
        self._fixed.extend([fixed] * n)
        return list(range(start, start + n))

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[rb] = ra
            self._fixed[ra] = self._fixed[ra] or self._fixed[rb]

    def _union_lists(self, a: list[int], b: list[int]) -> None:
        if len(a) != len(b):
            raise UnsupportedModelError(f"internal: coupling {len(a)} with {len(b)} channels")
        for x, y in zip(a, b):
            self._union(x, y)

    def _fix(self, labels: list[int] | None) -> None:
        for label in labels or ():
            self._fixed[self.find(label)] = True

    def _fix_nested(self, info: Any) -> None:
        for labels in R.all_labels(info):
            self._fix(labels)

    def _port(
        self,
        module: nn.Module,
        name: str,
        dim: str,
        labels: list[int] | None,
        size: int = 0,
        blocks: int = 1,
    ) -> list[int]:
        """Labels of one module dimension; a module called again couples with its first call."""
        key = (id(module), dim)
        if key in self._ports:
            stored = self._ports[key]
            if labels is not None:
                self._union_lists(stored, labels)
            return stored
        labels = list(labels) if labels is not None else self._fresh(size)
        self._ports[key] = labels
        self.edits.append(ChannelEdit(name, module, dim, labels))
        if blocks > 1:
            per = len(labels) // blocks
            why = f"{name} ({type(module).__name__}, {blocks} groups)"
            self.constraints.append((why, [labels[i * per : (i + 1) * per] for i in range(blocks)]))
        return labels

    def _param_port(self, ref: R.ParamRef, axis: int, labels: list[int]) -> None:
        """A parameter used directly becomes an edit slicing it along ``axis``."""
        self._port(ref.module, ref.owner, f"param:{ref.attr}:{axis}", labels)

    def _along(self, info: Any, x: torch.Tensor, axis: int) -> list[int]:
        """Labels of ``x`` along ``axis``; channels on another axis get fixed (treated as data)."""
        if isinstance(info, R.Info) and info.cdim == axis:
            return info.labels
        if isinstance(info, R.Info):
            self._fix(info.labels)
        return self._fresh(x.shape[axis], fixed=True)

    def _split(self, labels: list[int], sizes: list[int], axes: list[int], literal: Any) -> Any:
        """A channel axis reshaped into ``sizes`` on ``axes``: units over all but the last."""
        head_dim = sizes[-1]
        units = []
        for u in range(math.prod(sizes[:-1])):
            block = labels[u * head_dim : (u + 1) * head_dim]
            for label in block[1:]:
                self._union(block[0], label)
            units.append(block[0])
        owner = self._scope
        self.head_labels.update(units)
        self.splits.append(HeadSplit(owner, head_dim, tuple(sizes[:-1]), units))
        if literal is not None:
            for k, axis in enumerate(axes[:-1]):
                if literal(axis) and not self._attribute_backed(owner, sizes[k]):
                    self._literal_axes.append((units, tuple(sizes[:-1]), k))
        if len(axes) == 2:
            return R.Info(axes[0], units)
        return R.Multi(tuple(axes[:-1]), tuple(sizes[:-1]), units)

    def _one_head(self, outs: list[int], b: list[int], b_big: list[int]) -> bool:
        """A reshape to ``(..., 1, D)`` is a split into one head iff ``D`` is the ``head_dim``
        of the module doing it (otherwise it is just an added axis)."""
        k = b.index(b_big[0])
        if k == 0 or outs[b[k - 1]] != 1 or b_big[0] != b[-1]:
            return False
        module = self._modules.get(self._scope)
        return module is not None and any(
            getattr(module, attr, None) == outs[b_big[0]] for attr in HEAD_DIM_ATTRS
        )

    def _attribute_backed(self, owner: str, size: int, names: tuple = HEAD_COUNT_ATTRS) -> bool:
        """A literal head count is fine if it is an attribute nnshrink updates (``num_heads``)."""
        module = self._modules.get(owner)
        return module is not None and any(getattr(module, attr, None) == size for attr in names)

    def _width_backed(self, size: int) -> bool:
        """A literal merged width is fine if it is an attention width nnshrink updates."""
        return self._attribute_backed(self._scope, size, WIDTH_ATTRS)

    def _check_literal_axes(self) -> None:
        """A unit axis of literal size must keep its count: its units must stay together."""
        for units, sizes, k in self._literal_axes:
            grid = torch.tensor([self.find(u) for u in units]).reshape(sizes).movedim(k, -1)
            rows = grid.reshape(-1, sizes[k])
            if not bool((rows == rows[:, :1]).all()):
                self._fix(units)

    def _unknown_op(self, what: str, infos: list[Any]) -> None:
        labels = [label for info in infos for ls in R.all_labels(info) for label in ls]
        self._unknown.append((what, labels))

    def _check_unknown(self) -> None:
        bad = [(w, ls) for w, ls in self._unknown if not all(self.is_fixed(x) for x in ls)]
        if not bad:
            return
        names = [w for w, _ in bad]
        if self.strict:
            raise UnsupportedModelError(
                f"structured pruning cannot follow channels through {', '.join(names[:5])}"
                f"{' and more' if len(names) > 5 else ''}. Supported: {R.supported_ops()}. Fix: "
                "add the layers that feed it to `exclude`, register the module type with "
                "nnshrink.pruning.structured.register_layer_ops, or pass strict=False to keep "
                "those channels and prune the rest."
            )
        for what, labels in bad:
            self._fix(labels)
            self.skipped.append(f"{what}: channels reaching it are kept (op not supported)")
        warnings.warn(
            "structured pruning kept the channels of ops it cannot follow: " + "; ".join(names),
            stacklevel=4,
        )

    # ---------------------------------------------------------------- tracer visitor
    @property
    def _scope(self) -> str:
        return self._current.scope if self._current is not None else ""

    def input(self, value: Any) -> Any:
        return R.placeholder(self, value)

    def param(self, owner: str, module: nn.Module, attr: str, tensor: torch.Tensor) -> Any:
        return R.ParamRef(owner, module, attr, tensor)

    def output(self, infos: Any, value: Any) -> None:
        self._fix_nested(R.sanitize(self, infos, False, False))
        self.output_shapes = [tuple(t.shape) for t in flat_tensors(value)]

    def visit(self, call: Call) -> Any:
        self._current = call
        try:
            if call.kind == "module":
                if not R.has_tensor(call.out):
                    return None
                return self._module(call)
            return visit_function(self, call)
        finally:
            self._current = None

    _current: Call | None = None

    def _module(self, call: Call) -> Any:
        module, name, out = call.module, call.target, call.out
        infos = [R.sanitize(self, i, False, False) for i in call.infos]
        ops = leaf_ops(module)
        if ops is not None and ops.coupling == "custom":
            return ops.trace(ModuleCall(self, call, infos))
        x = call.args[0] if call.args else None
        info = infos[0] if infos else None
        if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
            self._unknown_op(call.where, infos)
            return R.anon_like(out)
        if isinstance(module, nn.modules.conv._ConvNd):
            return self._conv(name, module, info, x, out, call.where)
        if isinstance(module, nn.LayerNorm | getattr(nn, "RMSNorm", nn.LayerNorm)):
            return self._layer_norm(name, module, info, x, out)
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return R.carry(self, info, x, out)
        if isinstance(module, nn.GroupNorm):
            labels = self._along(info, x, 1)
            return R.Info(1, self._port(module, name, "out", labels, blocks=module.num_groups))
        if ops is not None:
            last = ops.layout == "last"
            axis = x.dim() - 1 if last else (1 if x.dim() > 1 else 0)
            out_axis = out.dim() - 1 if last else (1 if out.dim() > 1 else 0)
            if ops.coupling == "shared":
                return R.Info(axis, self._port(module, name, "out", self._along(info, x, axis)))
            self._port(module, name, "in", self._along(info, x, axis))
            return R.Info(out_axis, self._port(module, name, "out", None, out.shape[out_axis]))
        if isinstance(module, R.PASSTHROUGH_MODULES):
            return R.carry(self, info, x, out)
        if isinstance(module, nn.Flatten):
            return R.flatten(info, x, out, module.start_dim, module.end_dim)
        if isinstance(module, nn.Unflatten):
            return R.reshape(self, info, x, out, None, None)
        if isinstance(module, nn.Softmax | nn.LogSoftmax | nn.Softmin):
            return R.softmax(self, info, x, out, module.dim)
        self._unknown_op(call.where, infos)
        return R.anon_like(out)

    def _conv(self, name, conv, info, x, out, what) -> Any:
        if isinstance(conv, nn.modules.conv._ConvTransposeNd) and conv.groups != 1:
            self._unknown_op(what + f" with groups={conv.groups}", [info])
            return R.ANON
        in_labels = self._along(info, x, 1)
        g = conv.groups
        if g > 1 and g == conv.in_channels == conv.out_channels:
            # depthwise: input channel i is output channel i, one dimension to slice
            return R.Info(1, self._port(conv, name, "out", in_labels))
        self._port(conv, name, "in", in_labels, blocks=g)
        return R.Info(1, self._port(conv, name, "out", None, out.shape[1], blocks=g))

    def _layer_norm(self, name, ln, info, x, out) -> Any:
        axes = range(x.dim() - len(ln.normalized_shape), x.dim())
        if not isinstance(info, R.Info) or info.cdim not in axes:
            return R.carry(self, info, x, out)
        if len(ln.normalized_shape) != 1:
            self._fix(info.labels)
            return info
        return R.Info(info.cdim, self._port(ln, name, "out", info.labels))
