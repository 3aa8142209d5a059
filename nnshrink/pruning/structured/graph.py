"""Dependency graph: trace a model and find which channel dimensions must be pruned together.

Level 0 of structured pruning. The model is traced with ``torch.fx.symbolic_trace`` (a custom
tracer that keeps every standard layer and every type known to :mod:`.layer_ops` as a leaf) and
the traced graph is run once on ``example_inputs``. While running, every tensor carries one
*label* per channel; channel-producing layers (conv/linear outputs, padded shortcut channels)
create fresh labels, channel-preserving ops pass labels on, and ops that tie channels together
(``+``/``*`` between feature maps, depthwise convs, a module called twice, ``cat`` along another
axis) merge labels (union-find). Each module dimension that would have to be sliced is recorded
as a :class:`ChannelEdit` holding the label of each of its positions; two edits are coupled iff
they share a label. The per-operation rules live in :mod:`.rules`; ``group.py`` turns connected
edits into groups.

Why ``torch.fx`` and not ``torch.export``: fx keeps ``call_module`` nodes with their qualified
names (so edits point at the user's modules, and a module reused twice is one node target), it
runs in milliseconds without decompositions, and it leaves the user's model untouched; export
lowers modules to aten ops, so module identity has to be reconstructed. The price is that the
forward must be symbolically traceable (no data-dependent Python control flow); untraceable
models raise :class:`UnsupportedModelError` saying so, before anything is edited.

Channels that must never change are *fixed*: the model inputs, everything returned by the model
(so the final classifier keeps its outputs), channels sliced by a literal index (``x[:, :16]``),
split by literal sizes or reshaped to literal sizes, and channels mixed by a reduction or
softmax over the channel axis.

Example:
    >>> g = DependencyGraph(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3)),
    ...                     torch.zeros(1, 1, 8, 8))
    >>> [(e.name, e.dim, len(e.labels)) for e in g.edits]
    [('0', 'in', 1), ('0', 'out', 4), ('2', 'in', 4), ('2', 'out', 2)]
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from nnshrink.core import as_input_tuple
from nnshrink.models.resnet import ZeroPadShortcut

from . import rules as R
from .layer_ops import ops_for

__all__ = ["ChannelEdit", "DependencyGraph", "UnsupportedModelError"]


class UnsupportedModelError(ValueError):
    """The model uses an operation that structured pruning cannot follow (nothing was edited)."""


@dataclasses.dataclass
class ChannelEdit:
    """One module dimension to slice: ``dim`` is ``"out"`` or ``"in"``; one label per position."""

    name: str
    module: nn.Module
    dim: str
    labels: list[int]


class _Tracer(fx.Tracer):
    """Keep standard layers and every type with registered slicers as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return ops_for(m) is not None or super().is_leaf_module(m, module_qualified_name)


class _Runner(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, graph: DependencyGraph) -> None:
        super().__init__(gm)
        self._graph = graph

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        self._graph._visit(n, args, kwargs, value, self.module)
        return value


class DependencyGraph:
    """Channel dependencies of ``model`` for ``example_inputs``.

    Attributes:
        edits: every module dimension to slice, in execution order.
        constraints: ``(why, blocks)``: lists of label blocks that must keep equal counts
            (grouped convs, ``GroupNorm``, ``chunk``).

    Args:
        model: the model (left unchanged; run once in eval mode under ``torch.no_grad``).
        example_inputs: a tensor or tuple of tensors.
        ignore: ``(name, module) -> bool``; output channels of accepted modules are fixed.

    Raises:
        UnsupportedModelError: the model cannot be traced, or a prunable channel reaches an
            operation the graph does not understand (the message names the fx node or module).
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        *,
        ignore: Callable[[str, nn.Module], bool] | None = None,
    ) -> None:
        self.model = model
        self.edits: list[ChannelEdit] = []
        self.constraints: list[tuple[str, list[list[int]]]] = []
        self._parent: list[int] = []
        self._fixed: list[bool] = []
        self._ports: dict[tuple[int, str], list[int]] = {}
        self._info: dict[fx.Node, Any] = {}
        self._unknown: list[tuple[str, list[int]]] = []
        self._names = {}
        for name, module in model.named_modules():
            self._names.setdefault(id(module), name)
        inputs = as_input_tuple(example_inputs)
        try:
            traced = _Tracer().trace(model)
        except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
            raise UnsupportedModelError(
                f"torch.fx could not trace {type(model).__name__}: {exc}. Structured pruning "
                "needs a symbolically traceable forward (no Python control flow on tensor "
                "values); move such code into a submodule and register it with "
                "register_layer_ops, or prune the traceable submodules separately."
            ) from exc
        gm = fx.GraphModule(model, traced)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad():
                _Runner(gm, self).run(*inputs)
        finally:
            for m, mode in modes:
                m.training = mode
        for edit in self.edits:
            if ignore is not None and edit.dim == "out" and ignore(edit.name, edit.module):
                self._fix(edit.labels)
        self._check_unknown()

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

    def _along(self, info: Any, x: torch.Tensor, axis: int) -> list[int]:
        """Labels of ``x`` along ``axis``; channels on another axis get fixed (treated as data)."""
        if isinstance(info, R.Info) and info.cdim == axis:
            return info.labels
        if isinstance(info, R.Info):
            self._fix(info.labels)
        return self._fresh(x.shape[axis], fixed=True)

    def _unknown_op(self, what: str, infos: list[Any]) -> None:
        labels = [label for info in infos for ls in R.all_labels(info) for label in ls]
        self._unknown.append((what, labels))

    def _check_unknown(self) -> None:
        bad = [what for what, labels in self._unknown if not all(self.is_fixed(x) for x in labels)]
        if bad:
            raise UnsupportedModelError(
                f"structured pruning cannot follow channels through {', '.join(bad[:5])}"
                f"{' and more' if len(bad) > 5 else ''}. Supported: {R.supported_ops()}. Fix: "
                "add the layers that feed it to `ignore`, or register the module type with "
                "nnshrink.pruning.structured.register_layer_ops."
            )

    # ---------------------------------------------------------------- node visitors
    def _visit(self, n: fx.Node, args: tuple, kwargs: dict, value: Any, gm: nn.Module) -> None:
        if n.op == "placeholder":
            self._info[n] = R.placeholder(self, value)
            return
        if n.op == "get_attr":
            self._info[n] = R.anon_like(value)
            return
        if n.op == "output":
            self._fix_nested([self._arg_info(a) for a in R.flat_nodes(n.args)])
            return
        if not R.has_tensor(value):
            self._info[n] = None
            return
        infos = [self._arg_info(a) for a in n.args]
        kw_infos = {k: self._arg_info(a) for k, a in n.kwargs.items()}
        if n.op == "call_module":
            module = gm.get_submodule(n.target)
            name = self._names.get(id(module), str(n.target))
            info = self._module(n, name, module, infos, args, value)
        else:
            info = self._function(n, infos, kw_infos, args, kwargs, value)
        self._info[n] = info

    def _arg_info(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self._info.get(a)
        if isinstance(a, list | tuple):
            return [self._arg_info(x) for x in a]
        return None

    def _module(self, n, name, module, infos, args, out) -> Any:
        x = args[0] if args else None
        info = infos[0] if infos else None
        what = f"module '{name}' ({type(module).__name__})"
        if not isinstance(x, torch.Tensor) or not isinstance(out, torch.Tensor):
            self._unknown_op(what, infos)
            return R.anon_like(out)
        ops = ops_for(module)
        if isinstance(module, ZeroPadShortcut):
            in_labels = self._along(info, x, 1)
            pad = out.shape[1] - len(in_labels)
            labels = in_labels + (self._fresh(pad) if pad > 0 else [])
            return R.Info(1, self._port(module, name, "out", labels))
        if isinstance(module, nn.modules.conv._ConvNd):
            return self._conv(name, module, info, x, out, what)
        if isinstance(module, nn.Linear):
            axis = x.dim() - 1
            self._port(module, name, "in", self._along(info, x, axis))
            return R.Info(out.dim() - 1, self._port(module, name, "out", None, out.shape[-1]))
        if isinstance(module, nn.LayerNorm):
            return self._layer_norm(name, module, info, x, out)
        if isinstance(module, nn.PReLU) and module.num_parameters == 1:
            return R.carry(self, info, x, out)
        if isinstance(module, nn.GroupNorm):
            labels = self._along(info, x, 1)
            return R.Info(1, self._port(module, name, "out", labels, blocks=module.num_groups))
        if ops is not None and ops.coupling == "shared":
            return R.Info(1, self._port(module, name, "out", self._along(info, x, 1)))
        if ops is not None and ops.coupling == "independent":
            axis = 1 if x.dim() > 1 else 0
            self._port(module, name, "in", self._along(info, x, axis))
            out_axis = 1 if out.dim() > 1 else 0
            return R.Info(out_axis, self._port(module, name, "out", None, out.shape[out_axis]))
        if isinstance(module, R.PASSTHROUGH_MODULES):
            return R.carry(self, info, x, out)
        if isinstance(module, nn.Flatten):
            return R.flatten(info, x, out, module.start_dim, module.end_dim)
        if isinstance(module, nn.Unflatten):
            return R.reshape(self, info, x, out, None)
        if isinstance(module, nn.Softmax | nn.LogSoftmax | nn.Softmin):
            return R.softmax(self, info, x, out, module.dim)
        self._unknown_op(what, infos)
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
        if ln.weight is None:
            return info
        return R.Info(info.cdim, self._port(ln, name, "out", info.labels))

    def _function(self, n, infos, kw_infos, args, kwargs, out) -> Any:
        target = n.target
        method = n.op == "call_method"
        first = infos[0] if infos else None
        x = args[0] if args else None
        what = (
            f"{'method .' if method else 'function '}{R.target_name(target)} (fx node '{n.name}')"
        )

        def get(i: int, key: str, default: Any = None) -> Any:
            return args[i] if len(args) > i else kwargs.get(key, default)

        if (method and target in R.PASSTHROUGH_METHODS) or (
            not method and target in R.PASSTHROUGH_FUNCTIONS
        ):
            return R.carry(self, first, x, out)
        if (method and target in R.ELEMENTWISE_METHODS) or (not method and target in R.ELEMENTWISE):
            operands = list(zip(args, infos)) + [(kwargs.get("other"), kw_infos.get("other"))]
            return R.elementwise(self, operands, out)
        if not method and target in (torch.cat, torch.concat, torch.concatenate):
            tensors = get(0, "tensors")
            t_infos = infos[0] if infos else kw_infos.get("tensors")
            return R.cat(self, tensors, t_infos, get(1, "dim", 0), out)
        if R.target_name(target) in ("split", "chunk") and isinstance(out, tuple | list):
            if target == "chunk" or target is torch.chunk:
                dim, dynamic = get(2, "dim", 0), True
            else:
                dim = get(2, "dim", 0)
                raw = n.args[1] if len(n.args) > 1 else n.kwargs.get("split_size_or_sections")
                dynamic = isinstance(raw, fx.Node)
            return R.split(self, first, x, out, dim, dynamic)
        if target is operator.getitem:
            return R.getitem(self, first, x, get(1, "idx"), out)
        if (method and target == "flatten") or target is torch.flatten:
            return R.flatten(first, x, out, get(1, "start_dim", 0), get(2, "end_dim", -1))
        if (method and target in R.RESHAPE_METHODS) or target in R.RESHAPE_FUNCTIONS:
            shape_args = None
            if target in ("view", "reshape", torch.reshape):
                raw = list(n.args[1:])
                shape_args = raw[0] if len(raw) == 1 and isinstance(raw[0], list | tuple) else raw
            return R.reshape(self, first, x, out, shape_args)
        if (method and target in R.REDUCE_METHODS) or target in R.REDUCE_FUNCTIONS:
            return R.reduce(self, first, x, out, get(1, "dim"), get(2, "keepdim", False))
        if (method and target == "permute") or target is torch.permute:
            dims = args[1:] if method and not isinstance(get(1, "dims"), list | tuple) else None
            return R.permute(first, x, list(dims) if dims is not None else list(get(1, "dims")))
        if (method and target == "transpose") or target is torch.transpose:
            return R.transpose(first, x, get(1, "dim0"), get(2, "dim1"))
        if target is F.pad:
            return R.pad(self, first, x, out, get(1, "pad"), get(2, "mode", "constant"))
        if (method and target in ("softmax", "log_softmax")) or target in (
            torch.softmax, F.softmax, torch.log_softmax, F.log_softmax
        ):  # fmt: skip
            return R.softmax(self, first, x, out, get(1, "dim"))
        self._unknown_op(what, list(infos) + list(kw_infos.values()))
        return R.anon_like(out)
