"""Per-layer slicers: physically remove output or input channels of one module.

Level 1 of structured pruning: ``prune_out_channels(module, keep_idx)`` and
``prune_in_channels(module, keep_idx)`` slice one module's parameters, gradients and buffers and
update its shape attributes. They know nothing about the rest of the network; keeping neighbours
consistent is the job of :mod:`nnshrink.pruning.structured.group`.

Supported here: ``Conv1d/2d/3d`` (plain, depthwise, grouped), ``ConvTranspose1d/2d/3d``
(groups=1), ``Linear``, ``Embedding``, ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``,
``InstanceNorm1d/2d/3d``, ``LayerNorm`` and ``RMSNorm`` (1-D ``normalized_shape``), ``GroupNorm``
(equal count kept per group) and ``PReLU``; :mod:`.attention` adds ``nn.MultiheadAttention``,
:mod:`.hf` the ``Conv1D`` of ``transformers``, and ``nnshrink/models/pruning_rules.py`` the zoo's
own layers. Add others with :func:`register_layer_ops`.

Why plugins are loaded lazily: a module type that lives outside this package (a zoo layer, a
``transformers`` class) registers its rule from its own package, and the structured package
imports that registration module the first time it looks a rule up (:func:`ops_for`). Imports
stay one-way at import time: ``nnshrink.models`` never imports pruning, ``transformers`` is never
imported unless the user already did, and no rule here tests a class *name*.

Example:
    >>> conv = nn.Conv2d(3, 8, 3)
    >>> prune_out_channels(conv, [0, 2, 5]); conv.out_channels, tuple(conv.weight.shape)
    (3, (3, 3, 3, 3))
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "LayerOps",
    "ops_for",
    "prune_in_channels",
    "prune_out_channels",
    "register_layer_ops",
    "slice_tensor_attr",
    "supported_types",
]

Slicer = Callable[[nn.Module, torch.Tensor], None]
#: ``fn(module, dim) -> [(tensor, grad or None, axis)]``: what scores each position of ``dim``.
Weights = Callable[[nn.Module, str], list[tuple[torch.Tensor, Any, int]]]


@dataclasses.dataclass(frozen=True)
class LayerOps:
    """How to slice one module type, and how channels flow through it.

    Attributes:
        prune_out: ``fn(module, keep)`` for the output dimension (``dim="out"``).
        prune_in: ``fn(module, keep)`` for the input dimension (``dim="in"``).
        coupling: ``"independent"`` (conv/linear: input and output channels are separate
            dimensions), ``"shared"`` (norm layers: output channel i is input channel i, one
            dimension) or ``"custom"`` (``trace`` is the graph rule).
        layout: where the channels are: ``"first"`` (axis 1, or 0 for 1-D inputs: convs, BN) or
            ``"last"`` (the last axis: ``Linear``, ``LayerNorm``, embeddings).
        trace: for ``coupling="custom"``: ``fn(call) -> output labels`` with ``call`` a
            :class:`~.graph.ModuleCall` (how ``ZeroPadShortcut`` and attention are followed).
        dims: slicers of further named dimensions (``{"heads": fn}`` for attention).
        weights: ``fn(module, dim)`` giving the tensors that score each position of ``dim``
            (default: the ``weight`` of conv/linear layers on the matching axis).
        convert: ``fn(module) -> module``: an equivalent module to put in its place before
            slicing (``nn.MultiheadAttention`` cannot hold fewer heads than its width).
    """

    prune_out: Slicer
    prune_in: Slicer
    coupling: Literal["independent", "shared", "custom"] = "independent"
    layout: Literal["first", "last"] = "first"
    trace: Callable[[Any], Any] | None = None
    dims: Mapping[str, Slicer] = dataclasses.field(default_factory=dict)
    weights: Weights | None = None
    convert: Callable[[nn.Module], nn.Module] | None = None

    def slicer(self, dim: str) -> Slicer:
        """The slicer of ``dim`` (``"out"``, ``"in"`` or a name in :attr:`dims`)."""
        if dim == "out":
            return self.prune_out
        if dim == "in":
            return self.prune_in
        if dim in self.dims:
            return self.dims[dim]
        raise KeyError(f"no slicer for dimension {dim!r}")


_REGISTRY: dict[type[nn.Module], LayerOps] = {}
#: modules registering rules for types defined outside this package (see the module docstring):
#: ``(module to import, module that must already be imported or None)``.
PLUGINS: list[tuple[str, str | None]] = [
    ("nnshrink.models.pruning_rules", None),
    ("nnshrink.pruning.structured.attention", None),
    ("nnshrink.pruning.structured.hf", "transformers"),
]
_loaded: set[str] = set()


def register_layer_ops(
    module_type: type[nn.Module],
    prune_out_channels: Slicer,
    prune_in_channels: Slicer | None = None,
    *,
    coupling: Literal["independent", "shared", "custom"] | None = None,
    layout: Literal["first", "last"] = "first",
    trace: Callable[[Any], Any] | None = None,
    dims: Mapping[str, Slicer] | None = None,
    weights: Weights | None = None,
    convert: Callable[[nn.Module], nn.Module] | None = None,
) -> None:
    """Teach structured pruning to slice ``module_type`` (and how channels flow through it).

    Args:
        module_type: the module class (subclasses match too).
        prune_out_channels: ``fn(module, keep_idx)`` slicing the output channels in place.
        prune_in_channels: ``fn(module, keep_idx)`` slicing the input channels; leave ``None`` for
            layers whose output channel i is input channel i (norms, per-channel scales).
        coupling: override the coupling (default: ``"independent"`` when ``prune_in_channels`` is
            given, ``"shared"`` otherwise; ``"custom"`` when ``trace`` is given). Registered
            types are traced as leaves.
        layout: ``"first"`` (channels on axis 1) or ``"last"`` (channels on the last axis).
        trace: a custom graph rule, see :class:`LayerOps`.
        dims: slicers of further named dimensions.
        weights: see :class:`LayerOps`.
        convert: see :class:`LayerOps`.

    Example:
        >>> class Scale(nn.Module):
        ...     def __init__(self, c): super().__init__(); self.s = nn.Parameter(torch.ones(c))
        ...     def forward(self, x): return x * self.s[:, None, None]
        >>> def cut(m, keep): m.s = nn.Parameter(m.s.data[keep])
        >>> register_layer_ops(Scale, cut)
    """
    if coupling is None:
        coupling = (
            "custom"
            if trace is not None
            else ("shared" if prune_in_channels is None else "independent")
        )
    if coupling == "custom" and trace is None:
        raise ValueError(f"{module_type.__name__}: coupling='custom' needs a trace rule")
    _REGISTRY[module_type] = LayerOps(
        prune_out_channels,
        prune_in_channels or prune_out_channels,
        coupling,
        layout,
        trace,
        dict(dims or {}),
        weights,
        convert,
    )


def load_plugins() -> None:
    """Import the rule modules of :data:`PLUGINS` whose condition holds (once each)."""
    for module_name, needs in PLUGINS:
        if module_name in _loaded or (needs is not None and needs not in sys.modules):
            continue
        _loaded.add(module_name)
        importlib.import_module(module_name)


def ops_for(module: nn.Module) -> LayerOps | None:
    """The registered :class:`LayerOps` for ``module`` (nearest class in its MRO), or ``None``."""
    load_plugins()
    for cls in type(module).__mro__:
        if cls in _REGISTRY:
            return _REGISTRY[cls]
    return None


def supported_types() -> list[str]:
    """Names of the module types that can be sliced."""
    load_plugins()
    return sorted(cls.__name__ for cls in _REGISTRY)


def index_of(keep_idx: Sequence[int] | torch.Tensor, size: int, what: str) -> torch.Tensor:
    """Sorted, checked LongTensor of kept positions (``what`` names the dimension in errors)."""
    idx = torch.as_tensor(keep_idx, dtype=torch.long).reshape(-1)
    if idx.numel() == 0:
        raise ValueError(f"cannot remove every {what} channel; keep at least one")
    idx = torch.sort(idx).values
    if idx[0] < 0 or idx[-1] >= size or torch.unique(idx).numel() != idx.numel():
        raise ValueError(f"keep_idx must be distinct {what} channel indices in [0, {size})")
    return idx


_index = index_of


def prune_out_channels(module: nn.Module, keep_idx: Sequence[int] | torch.Tensor) -> None:
    """Keep only the output channels ``keep_idx`` of ``module`` (in place).

    Args:
        module: a supported layer (see :func:`supported_types`).
        keep_idx: indices of output channels to keep (any order; kept in ascending order).

    Example:
        >>> lin = nn.Linear(4, 6); prune_out_channels(lin, [1, 3]); lin.out_features
        2
    """
    ops = _require(module)
    ops.prune_out(module, torch.as_tensor(keep_idx, dtype=torch.long))


def prune_in_channels(module: nn.Module, keep_idx: Sequence[int] | torch.Tensor) -> None:
    """Keep only the input channels ``keep_idx`` of ``module`` (in place).

    Example:
        >>> lin = nn.Linear(4, 6); prune_in_channels(lin, [0, 3]); tuple(lin.weight.shape)
        (6, 2)
    """
    ops = _require(module)
    ops.prune_in(module, torch.as_tensor(keep_idx, dtype=torch.long))


def _require(module: nn.Module) -> LayerOps:
    ops = ops_for(module)
    if ops is None:
        raise TypeError(
            f"no slicer for {type(module).__name__}; supported: {supported_types()} "
            "(add one with nnshrink.pruning.structured.register_layer_ops)"
        )
    return ops


def slice_tensor_attr(module: nn.Module, name: str, idx: torch.Tensor, dim: int) -> None:
    """Replace parameter or buffer ``name`` by its slice along ``dim``, keeping ``.grad``.

    Args:
        module: the owner of the tensor.
        name: the attribute (``"weight"``, ``"cls_token"``, ...); missing or ``None``: no-op.
        idx: positions to keep along ``dim``.
        dim: the axis to slice.

    Example:
        >>> m = nn.Linear(3, 2); slice_tensor_attr(m, "weight", torch.tensor([0, 2]), 1)
        >>> tuple(m.weight.shape)
        (2, 2)
    """
    old = getattr(module, name, None)
    if old is None:
        return
    new_data = old.data.index_select(dim, idx.to(old.device)).clone()
    if isinstance(old, nn.Parameter):
        new = nn.Parameter(new_data, requires_grad=old.requires_grad)
        if old.grad is not None:
            new.grad = old.grad.index_select(dim, idx.to(old.device)).clone()
        setattr(module, name, new)
    else:
        module.register_buffer(
            name, new_data, persistent=name not in module._non_persistent_buffers_set
        )


_slice_param = slice_tensor_attr


def _block_counts(idx: torch.Tensor, block: int, n_blocks: int, what: str) -> int:
    counts = torch.bincount(idx // block, minlength=n_blocks)
    if not bool((counts == counts[0]).all()) or int(counts[0]) == 0:
        raise ValueError(
            f"{what} has {n_blocks} groups: keep the same non-zero number of channels in each "
            f"group (got {counts.tolist()})"
        )
    return int(counts[0])


def _is_depthwise(conv: nn.Module) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _conv_out(conv: nn.Module, keep: torch.Tensor) -> None:
    idx = _index(keep, conv.out_channels, "output")
    if _is_depthwise(conv):
        _conv_depthwise(conv, idx)
        return
    if conv.groups > 1:
        _block_counts(idx, conv.out_channels // conv.groups, conv.groups, type(conv).__name__)
    _slice_param(conv, "weight", idx, 0)
    _slice_param(conv, "bias", idx, 0)
    conv.out_channels = idx.numel()


def _conv_in(conv: nn.Module, keep: torch.Tensor) -> None:
    idx = _index(keep, conv.in_channels, "input")
    if _is_depthwise(conv):
        _conv_depthwise(conv, idx)
        return
    g = conv.groups
    if g == 1:
        _slice_param(conv, "weight", idx, 1)
        conv.in_channels = idx.numel()
        return
    per_group_in = conv.in_channels // g
    k = _block_counts(idx, per_group_in, g, type(conv).__name__)
    # column j of out-channel o reads input (o // out_per_group) * per_group_in + j
    local = (idx % per_group_in).reshape(g, k)
    out_per_group = conv.out_channels // g
    cols = local.repeat_interleave(out_per_group, dim=0)  # (out, k)
    rows = torch.arange(conv.out_channels)[:, None].expand_as(cols)
    w = conv.weight
    new = nn.Parameter(w.data[rows, cols].clone(), requires_grad=w.requires_grad)
    if w.grad is not None:
        new.grad = w.grad[rows, cols].clone()
    conv.weight = new
    conv.in_channels = k * g


def _conv_depthwise(conv: nn.Module, idx: torch.Tensor) -> None:
    """Depthwise conv: input channel i feeds output channel i only, so both shrink together."""
    _slice_param(conv, "weight", idx, 0)
    _slice_param(conv, "bias", idx, 0)
    conv.in_channels = conv.out_channels = conv.groups = idx.numel()


def _deconv_out(conv: nn.Module, keep: torch.Tensor) -> None:
    if conv.groups != 1:
        raise ValueError(f"{type(conv).__name__} with groups={conv.groups} is not supported")
    idx = _index(keep, conv.out_channels, "output")
    _slice_param(conv, "weight", idx, 1)
    _slice_param(conv, "bias", idx, 0)
    conv.out_channels = idx.numel()


def _deconv_in(conv: nn.Module, keep: torch.Tensor) -> None:
    if conv.groups != 1:
        raise ValueError(f"{type(conv).__name__} with groups={conv.groups} is not supported")
    idx = _index(keep, conv.in_channels, "input")
    _slice_param(conv, "weight", idx, 0)
    conv.in_channels = idx.numel()


def _linear_out(lin: nn.Linear, keep: torch.Tensor) -> None:
    idx = _index(keep, lin.out_features, "output")
    _slice_param(lin, "weight", idx, 0)
    _slice_param(lin, "bias", idx, 0)
    lin.out_features = idx.numel()


def _linear_in(lin: nn.Linear, keep: torch.Tensor) -> None:
    idx = _index(keep, lin.in_features, "input")
    _slice_param(lin, "weight", idx, 1)
    lin.in_features = idx.numel()


def _embedding_out(emb: nn.Embedding, keep: torch.Tensor) -> None:
    """An embedding's output channels are the columns of its table (its input is token ids)."""
    idx = _index(keep, emb.embedding_dim, "embedding")
    _slice_param(emb, "weight", idx, 1)
    emb.embedding_dim = idx.numel()


def _norm(bn: nn.Module, keep: torch.Tensor) -> None:
    idx = _index(keep, bn.num_features, "feature")
    for name in ("weight", "bias", "running_mean", "running_var"):
        _slice_param(bn, name, idx, 0)
    bn.num_features = idx.numel()


def _layer_norm(ln: nn.Module, keep: torch.Tensor) -> None:
    if len(ln.normalized_shape) != 1:
        raise ValueError(
            f"{type(ln).__name__} over {ln.normalized_shape} cannot be sliced; only 1-D "
            "normalized_shape"
        )
    idx = _index(keep, ln.normalized_shape[0], "feature")
    _slice_param(ln, "weight", idx, 0)
    _slice_param(ln, "bias", idx, 0)
    ln.normalized_shape = (idx.numel(),)


def _group_norm(gn: nn.GroupNorm, keep: torch.Tensor) -> None:
    idx = _index(keep, gn.num_channels, "channel")
    _block_counts(idx, gn.num_channels // gn.num_groups, gn.num_groups, "GroupNorm")
    _slice_param(gn, "weight", idx, 0)
    _slice_param(gn, "bias", idx, 0)
    gn.num_channels = idx.numel()


def _prelu(m: nn.PReLU, keep: torch.Tensor) -> None:
    if m.num_parameters == 1:
        return  # one shared slope: nothing per channel
    idx = _index(keep, m.num_parameters, "channel")
    _slice_param(m, "weight", idx, 0)
    m.num_parameters = idx.numel()


def _embedding_trace(call: Any) -> Any:
    """Token ids in, fresh channels out on the last axis (ids are not channels)."""
    out = call.out
    return call.output(out.dim() - 1, call.port("out", size=out.shape[-1]))


def weight_axis(module: nn.Module, dim: str) -> int | None:
    """Axis of ``module.weight`` indexed by ``dim`` for the built-in layers (scores), or ``None``."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 1 if dim == "out" else 0
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        if dim == "in" and module.groups > 1 and not depthwise:
            return None  # the weight's input axis holds in_channels / groups entries
        return 0 if dim == "out" or depthwise else 1
    if isinstance(module, nn.Linear):
        return 0 if dim == "out" else 1
    if isinstance(module, nn.Embedding):
        return 1 if dim == "out" else None
    return None


for _conv in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_layer_ops(_conv, _conv_out, _conv_in)
for _deconv in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_layer_ops(_deconv, _deconv_out, _deconv_in)
register_layer_ops(nn.Linear, _linear_out, _linear_in, layout="last")
register_layer_ops(nn.Embedding, _embedding_out, layout="last", trace=_embedding_trace)
for _bn in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    register_layer_ops(_bn, _norm)
for _inorm in (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
    register_layer_ops(_inorm, _norm)
register_layer_ops(nn.LayerNorm, _layer_norm, layout="last")
if hasattr(nn, "RMSNorm"):
    register_layer_ops(nn.RMSNorm, _layer_norm, layout="last")
register_layer_ops(nn.GroupNorm, _group_norm)
register_layer_ops(nn.PReLU, _prelu)
