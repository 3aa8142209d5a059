"""Run a model once and report every operation to the dependency graph: fx first, else eager.

Two tracers feed the same visitor (:class:`~.graph.DependencyGraph`) with the same events: a
layer call (a *leaf*: a registered layer, an activation, pooling, ...) or a function / tensor
method call, each with its real arguments and result.

* **torch.fx** (``symbolic_trace`` with our leaves, then an ``Interpreter`` run on the example
  inputs). Where it works it knows more than any other tracer: which sizes in a ``view`` or
  ``split`` are literals written in the code (those channels must stay) and which are computed
  from the input. It needs a forward without Python control flow on tensors.
* **eager** (:class:`_EagerTracer`): the model runs as written, on the example inputs, under a
  ``TorchFunctionMode`` that sees every torch function and tensor method called outside a leaf,
  while forward hooks mark the leaves and the module nesting. It reaches everything that runs:
  Hugging Face models (whose forward branches on configs, kwargs and caches), ``nn.Transformer*``
  (which branch on their fast path), data-dependent code (the branch the example takes).

Why not ``torch.export`` (non-strict) or an autograd walk: export also runs the Python forward,
but records below ``__torch_function__`` after decompositions (``matmul`` becomes
``expand``/``bmm``/``_unsafe_view``, layers become ``aten`` calls on lifted parameters), so heads
and module identity have to be reconstructed; an autograd walk (Torch-Pruning) misses ops without
gradients and sees reshapes only through saved sizes. Recording at the ``torch.*`` level keeps
``F.linear``, ``view(..., -1, head_dim)`` and ``scaled_dot_product_attention`` as written, and
the hooks keep the user's module names.

Example:
    >>> events = []
    >>> class Log:
    ...     def input(self, value): return None
    ...     def param(self, *a): return None
    ...     def visit(self, call): events.append(call.where); return None
    ...     def output(self, info, value): pass
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> _ = trace_eager(model, (torch.zeros(1, 2),), {}, Log())
    >>> events
    ["module '0' (Linear)", "module '1' (ReLU)"]
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode

from .layer_ops import load_plugins, ops_for
from .rules import RULE_MODULES

__all__ = ["Call", "FxTraceError", "VisitorError", "is_leaf", "trace_eager", "trace_fx"]


class FxTraceError(Exception):
    """torch.fx could not trace the forward symbolically (its ``__cause__``)."""


class VisitorError(Exception):
    """An error raised by the graph's own rules (its ``__cause__``), not by the model."""


#: torch.nn containers traced *into* (fx would keep them as opaque leaves)
OPEN_MODULES = (
    nn.Transformer,
    nn.TransformerEncoder,
    nn.TransformerDecoder,
    nn.TransformerEncoderLayer,
    nn.TransformerDecoderLayer,
)


@dataclasses.dataclass
class Call:
    """One operation of the traced forward.

    Attributes:
        kind: ``"module"`` (a leaf), ``"function"`` or ``"method"`` (a tensor method).
        target: the leaf's qualified name, the function, or the method name.
        module: the leaf module (``None`` otherwise).
        args, kwargs: the real arguments; ``out``: the real result.
        infos, kw_infos: the graph's labels of each argument.
        scope: qualified name of the innermost non-leaf module running the op (attention
            attributes are looked up there).
        where: a description for messages.
        literal: ``fn(i, key, j=None)``: whether argument ``i`` / ``key`` (its item ``j``) is a
            literal in the code (``True``/``False`` under fx; ``None`` when it cannot tell).
    """

    kind: str
    target: Any
    module: nn.Module | None
    args: tuple
    kwargs: dict
    out: Any
    infos: list
    kw_infos: dict
    scope: str
    where: str
    literal: Callable[[int, str], bool | None]


def _unknown_literal(i: int, key: str, j: int | None = None) -> bool | None:
    return None


def leaf_ops(m: nn.Module):
    """The ops of ``m`` if it is traced as one registered leaf (its class's own ``forward``)."""
    ops = ops_for(m)
    if ops is None:
        return None
    if ops.coupling == "custom":
        return ops
    # a subclass with a forward of its own (a LayerNorm2d permuting inside) is traced into
    return ops if type(m).forward is _registered_class(m).forward else None


def _registered_class(m: nn.Module) -> type | None:
    from .layer_ops import _REGISTRY

    return next((cls for cls in type(m).__mro__ if cls in _REGISTRY), None)


def is_leaf(m: nn.Module) -> bool:
    """Whether both tracers keep ``m`` as one operation (registered layers, activations, pooling,
    other parameter-free ``torch.nn`` modules) rather than tracing its forward."""
    if leaf_ops(m) is not None or type(m) in RULE_MODULES or isinstance(m, RULE_MODULES):
        return True
    if isinstance(m, (*OPEN_MODULES, nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        return False
    return type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))


def split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """``(args, kwargs)`` from a tensor, a tuple/list of positional inputs or a dict of kwargs."""
    if example_inputs is None:
        raise ValueError("structured pruning needs example_inputs (e.g. torch.randn(1, 3, 32, 32))")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    return tuple(example_inputs), {}


def flat_tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) tuple, list, dict, dataclass or ``ModelOutput``."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in flat_tensors(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in flat_tensors(v)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [t for f in dataclasses.fields(value) for t in flat_tensors(getattr(value, f.name))]
    return []


@contextlib.contextmanager
def no_fastpath() -> Iterator[None]:
    """Disable PyTorch's fused transformer fast path (it hides the layers inside one kernel)."""
    backend = getattr(torch.backends, "mha", None)
    if backend is None:
        yield
        return
    before = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(before)


def _param_table(model: nn.Module) -> dict[int, tuple[str, nn.Module, str]]:
    table: dict[int, tuple[str, nn.Module, str]] = {}
    for owner, module in model.named_modules():
        for attr, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            if tensor is not None:
                table.setdefault(id(tensor), (owner, module, attr))
    return table


# ----------------------------------------------------------------------------------------- fx
class _FxTracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m)


class _FxRunner(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, model: nn.Module, visitor: Any) -> None:
        super().__init__(gm)
        self._visitor = visitor
        self._names: dict[int, str] = {}
        for name, module in model.named_modules():
            self._names.setdefault(id(module), name)
        self._infos: dict[fx.Node, Any] = {}
        # the user's parameters only: fx's own folded constants are plain constants
        self._params = _param_table(model)

    def _info(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            return self._infos.get(a)
        if isinstance(a, list | tuple):
            return [self._info(x) for x in a]
        return None

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        v = self._visitor
        if n.op == "placeholder":
            self._infos[n] = v.input(value)
        elif n.op == "get_attr":
            entry = self._params.get(id(value)) if isinstance(value, torch.Tensor) else None
            self._infos[n] = v.param(*entry, value) if entry else None
        elif n.op == "output":
            v.output(self._info(n.args[0]), value)
        else:
            args, kwargs = self.fetch_args_kwargs_from_env(n)
            stack = n.meta.get("nn_module_stack") or {}
            scope = next(reversed(stack.values()))[0] if stack else ""
            module = self.module.get_submodule(n.target) if n.op == "call_module" else None

            def literal(i: int, key: str, j: int | None = None, *, node: fx.Node = n) -> bool:
                raw = node.args[i] if len(node.args) > i else node.kwargs.get(key)
                if j is not None and isinstance(raw, list | tuple):
                    raw = raw[j] if j < len(raw) else None
                return not isinstance(raw, fx.Node)

            if module is not None:
                name = self._names.get(id(module), str(n.target))
                kind, target, where = "module", name, f"module '{name}' ({type(module).__name__})"
            else:
                kind = "method" if n.op == "call_method" else "function"
                target = n.target
                label = "method ." if kind == "method" else "function "
                where = f"{label}{_name(target)} (fx node '{n.name}')"
            call = Call(kind, target, module, args, kwargs, value,
                        [self._info(a) for a in n.args],
                        {k: self._info(a) for k, a in n.kwargs.items()},
                        scope, where, literal)  # fmt: skip
            try:
                self._infos[n] = v.visit(call)
            except Exception as exc:
                raise VisitorError() from exc
        return value


def trace_fx(model: nn.Module, args: tuple, kwargs: dict, visitor: Any) -> None:
    """Trace ``model`` with torch.fx and run the graph on ``args``, reporting to ``visitor``.

    Raises:
        FxTraceError: the forward is not symbolically traceable (the caller falls back to
            :func:`trace_eager`); errors of the traced run propagate as they are.
    """
    load_plugins()
    if kwargs:
        raise TypeError("the fx tracer takes positional example inputs only")
    try:
        traced = _FxTracer().trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, ...)
        raise FxTraceError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    _FxRunner(fx.GraphModule(model, traced), model, visitor).run(*args)


# -------------------------------------------------------------------------------------- eager
def _name(target: Any) -> str:
    return target if isinstance(target, str) else getattr(target, "__name__", repr(target))


_TENSOR_TYPES = (torch.Tensor, torch._C.TensorBase)


def _classify(func: Any) -> tuple[str, Any]:
    """``("method", name)`` for tensor methods and properties, else ``("function", func)``."""
    owner = getattr(func, "__self__", None)
    if type(func).__name__ == "method-wrapper" and owner is not None:  # a property getter
        return "method", getattr(owner, "__name__", "property")
    name = getattr(func, "__name__", None)
    if name is not None:
        for cls in _TENSOR_TYPES:
            if vars(cls).get(name) is func:
                return "method", name
    qual = getattr(func, "__qualname__", "") or ""
    if qual.startswith(("TensorBase.", "Tensor.")):
        return "method", name
    return "function", func


class _EagerTracer(TorchFunctionMode):
    """Sees every torch call outside leaves; hooks tell leaves and the module nesting."""

    def __init__(self, model: nn.Module, visitor: Any) -> None:
        super().__init__()
        self.visitor = visitor
        self.infos: dict[int, tuple[torch.Tensor, Any]] = {}
        self.params = _param_table(model)
        self.names: dict[int, str] = {}
        for name, module in model.named_modules():
            self.names.setdefault(id(module), name)
        self.leaf: nn.Module | None = None
        self.scope: list[str] = []
        self.busy = False
        self.handles = []
        for module in {id(m): m for m in model.modules()}.values():
            self.handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post, with_kwargs=True))

    # ------------------------------------------------------------------ labels of values
    def info(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            stored = self.infos.get(id(value))
            if stored is not None and stored[0] is value:
                return stored[1]
            entry = self.params.get(id(value))
            return self.visitor.param(*entry, value) if entry else None
        if isinstance(value, list | tuple):
            return [self.info(v) for v in value]
        return None

    def store(self, value: Any, info: Any) -> None:
        if isinstance(value, torch.Tensor):
            self.infos[id(value)] = (value, info)  # keeps the tensor alive: ids stay unique
        elif isinstance(value, list | tuple):
            infos = info if isinstance(info, list | tuple) else [info] * len(value)
            for v, i in zip(value, infos):
                self.store(v, i)

    # ------------------------------------------------------------------ hooks and mode
    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.busy or self.leaf is not None:
            return
        if is_leaf(module):
            self.leaf = module
        else:
            self.scope.append(self.names.get(id(module), ""))

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        if self.busy:
            return
        if self.leaf is module:
            self.leaf = None
            name = self.names.get(id(module), "")
            where = f"module '{name}' ({type(module).__name__})"
            self._visit("module", name, module, args, kwargs, out, where)
        elif self.leaf is None and self.scope and self.scope[-1] == self.names.get(id(module)):
            self.scope.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf is None and not self.busy:
            kind, target = _classify(func)
            scope = self.scope[-1] if self.scope else ""
            inside = f" in module '{scope}'" if scope else ""
            label = "method ." if kind == "method" else "function "
            self._visit(kind, target, None, args, kwargs, out, f"{label}{_name(target)}{inside}")
        return out

    def _visit(self, kind, target, module, args, kwargs, out, where) -> None:
        self.busy = True
        try:
            call = Call(kind, target, module, tuple(args), dict(kwargs), out,
                        [self.info(a) for a in args], {k: self.info(a) for k, a in kwargs.items()},
                        self.scope[-1] if self.scope else "", where,
                        _unknown_literal)  # fmt: skip
            try:
                info = self.visitor.visit(call)
            except Exception as exc:
                raise VisitorError() from exc
            self.store(out, info)
        finally:
            self.busy = False


def trace_eager(model: nn.Module, args: tuple, kwargs: dict, visitor: Any) -> Any:
    """Run ``model(*args, **kwargs)`` once, reporting each op to ``visitor``; return the output."""
    load_plugins()
    tracer = _EagerTracer(model, visitor)
    try:
        tracer.busy = True
        for a in args:
            tracer.store(a, visitor.input(a))
        for v in kwargs.values():
            tracer.store(v, visitor.input(v))
        tracer.busy = False
        root_leaf = is_leaf(model)
        with tracer:
            out = model(*args, **kwargs)
        if root_leaf and tracer.leaf is not None:
            raise RuntimeError("internal: the root leaf's hook did not run")
        tracer.busy = True
        visitor.output([tracer.info(t) for t in flat_tensors(out)], out)
        return out
    finally:
        for handle in tracer.handles:
            handle.remove()
