"""Describe a module tree as JSON and rebuild it: how edited models are saved by name + spec.

A zoo model is rebuilt with ``models.create(name, **kwargs)``. Compression edits the tree
(smaller ``Conv2d`` after pruning, a ``Linear`` replaced by an ``nn.Sequential`` of two after SVD,
a custom shared-weight layer after k-means). We store only the *differences* between the edited
model and a fresh build: for every path whose description differs, a full description of the new
submodule. Loading rebuilds by name, then re-applies those replacements, then loads the weights.

Descriptions are plain dicts: ``{"class": "torch.nn.Conv2d", "kwargs": {...}}`` for leaves, plus
``"children": {name: description}`` for containers built from their children (``Sequential``,
``ModuleList``, ``ModuleDict``). Standard PyTorch layers are known; custom classes register a
``init_kwargs(module) -> dict`` with :func:`register_module`. We wrote this rather than pickling
modules because pickles execute code on load and break when classes move.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

InitKwargs = Callable[[nn.Module], dict[str, Any]]
_KWARGS: dict[type[nn.Module], InitKwargs] = {}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class ArchitectureError(ValueError):
    """A module cannot be described or rebuilt; the message names the module and the fix."""


def register_module(cls: type[nn.Module], init_kwargs: InitKwargs) -> None:
    """Teach checkpoints to rebuild ``cls``: ``init_kwargs(instance)`` gives JSON-able kwargs.

    Args:
        cls: the module class (must be importable by its ``__module__`` and ``__qualname__``).
        init_kwargs: returns constructor kwargs such that ``cls(**kwargs)`` has the same
            parameter and buffer shapes as the instance.

    Example:
        >>> class Scale(nn.Module):
        ...     def __init__(self, n): super().__init__(); self.w = nn.Parameter(torch.ones(n))
        >>> register_module(Scale, lambda m: {"n": m.w.numel()})
    """
    _KWARGS[cls] = init_kwargs


def layer_kwargs(m: nn.Module) -> dict[str, Any]:
    """Constructor kwargs of a Linear- or Conv-like layer, as ``nn.Linear`` / ``nn.ConvNd`` take them.

    Layers that extend those signatures (binary, QAT, shared-weight layers) build their
    :func:`register_module` callbacks on it and add their own options.

    Args:
        m: an ``nn.Linear`` / ``nn.ConvNd`` or a look-alike with the same attributes.

    Example:
        >>> layer_kwargs(nn.Linear(3, 2, bias=False))
        {'in_features': 3, 'out_features': 2, 'bias': False}
    """
    if hasattr(m, "in_features"):
        return {"in_features": m.in_features, "out_features": m.out_features,
                "bias": m.bias is not None}  # fmt: skip
    if not hasattr(m, "in_channels"):
        raise ArchitectureError(
            f"{type(m).__name__} is neither Linear- nor Conv-like; describe its constructor "
            "with register_module(cls, init_kwargs) instead"
        )
    out = {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
    }
    if hasattr(m, "padding_mode"):
        out["padding_mode"] = m.padding_mode
    return out


def _deconv_kwargs(m: nn.Module) -> dict[str, Any]:
    out = layer_kwargs(m)
    del out["padding_mode"]
    out["output_padding"] = list(m.output_padding)
    return out


def _norm_kwargs(m: nn.Module) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


def _no_kwargs(m: nn.Module) -> dict[str, Any]:
    return {}


def _inplace(m: nn.Module) -> dict[str, Any]:
    return {"inplace": m.inplace}


for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_module(_cls, layer_kwargs)
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_module(_cls, _deconv_kwargs)
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_module(_cls, _norm_kwargs)
for _cls in (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Mish):
    register_module(_cls, _inplace)
for _cls in (nn.Identity, nn.Sigmoid, nn.Tanh, nn.GELU, nn.Softmax):
    register_module(_cls, _no_kwargs)
register_module(nn.Linear, layer_kwargs)
register_module(
    nn.LayerNorm,
    lambda m: {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": m.bias is not None,
    },
)
register_module(
    nn.GroupNorm,
    lambda m: {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": m.eps,
               "affine": m.affine},
)  # fmt: skip
register_module(nn.PReLU, lambda m: {"num_parameters": m.num_parameters})
register_module(nn.LeakyReLU, lambda m: {"negative_slope": m.negative_slope, "inplace": m.inplace})
register_module(nn.Dropout, lambda m: {"p": m.p, "inplace": m.inplace})
register_module(nn.Dropout2d, lambda m: {"p": m.p, "inplace": m.inplace})
register_module(nn.Flatten, lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim})
register_module(
    nn.MaxPool2d,
    lambda m: {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
               "dilation": m.dilation, "ceil_mode": m.ceil_mode},
)  # fmt: skip
register_module(
    nn.AvgPool2d,
    lambda m: {"kernel_size": m.kernel_size, "stride": m.stride, "padding": m.padding,
               "ceil_mode": m.ceil_mode, "count_include_pad": m.count_include_pad},
)  # fmt: skip
register_module(nn.AdaptiveAvgPool2d, lambda m: {"output_size": m.output_size})
register_module(nn.AdaptiveMaxPool2d, lambda m: {"output_size": m.output_size})
register_module(
    nn.Upsample, lambda m: {"size": m.size, "scale_factor": m.scale_factor, "mode": m.mode}
)
register_module(nn.ChannelShuffle, lambda m: {"groups": m.groups})


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _lookup_kwargs(module: nn.Module) -> InitKwargs | None:
    return _KWARGS.get(type(module))


def describe(module: nn.Module) -> dict[str, Any]:
    """JSON-able description of ``module`` sufficient to rebuild its structure.

    Raises:
        ArchitectureError: for an unregistered custom class (names it and :func:`register_module`).
    """
    cls = type(module)
    if isinstance(module, _CONTAINERS) and cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
        return {
            "class": _qualname(cls),
            "children": {name: describe(child) for name, child in module.named_children()},
        }
    fn = _lookup_kwargs(module)
    if fn is None:
        raise ArchitectureError(
            f"cannot describe {_qualname(cls)}: register it with "
            f"nnshrink.io.register_module({cls.__name__}, init_kwargs=lambda m: {{...}})"
        )
    desc: dict[str, Any] = {"class": _qualname(cls), "kwargs": fn(module)}
    # Registered non-container modules may hold submodules that were edited after construction.
    children = {name: describe(child) for name, child in module.named_children()}
    if children:
        desc["children"] = children
    return desc


def _import_class(qualname: str) -> type[nn.Module]:
    module_name, _, attr_path = qualname.rpartition(".")
    # Nested classes: walk back until a module imports.
    parts = qualname.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            return obj
    raise ArchitectureError(f"cannot import module class {qualname!r} ({module_name}, {attr_path})")


def build(desc: dict[str, Any]) -> nn.Module:
    """Rebuild a module (with fresh weights) from a :func:`describe` description."""
    cls = _import_class(desc["class"])
    if cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
        children = {name: build(child) for name, child in desc.get("children", {}).items()}
        if cls is nn.Sequential:
            from collections import OrderedDict

            return nn.Sequential(OrderedDict(children))
        if cls is nn.ModuleList:
            return nn.ModuleList([children[k] for k in sorted(children, key=int)])
        return nn.ModuleDict(children)
    try:
        module = cls(**desc.get("kwargs", {}))
    except TypeError as exc:
        raise ArchitectureError(f"cannot rebuild {desc['class']}: {exc}") from exc
    for name, child_desc in desc.get("children", {}).items():
        child = build(child_desc)
        current = getattr(module, name, None)
        if current is None or describe(current) != child_desc:
            setattr(module, name, child)
    return module


def tree_diff(reference: nn.Module, edited: nn.Module) -> dict[str, dict[str, Any]]:
    """Submodules of ``edited`` that differ from ``reference``: ``{path: description}``.

    Only the outermost differing paths are listed (a replaced block is described whole).
    """
    out: dict[str, dict[str, Any]] = {}

    def same(a: nn.Module, b: nn.Module) -> bool:
        if type(a) is not type(b):
            return False
        fa, fb = _lookup_kwargs(a), _lookup_kwargs(b)
        if fa is not None and fa(a) != fb(b):
            return False
        return True

    def walk(prefix: str, ref: nn.Module, new: nn.Module) -> None:
        if not same(ref, new):
            out[prefix] = describe(new)
            return
        ref_children = dict(ref.named_children())
        new_children = dict(new.named_children())
        if set(ref_children) != set(new_children):
            if not prefix:
                raise ArchitectureError("the model's top-level children changed; save it whole")
            out[prefix] = describe(new)
            return
        for name, child in new_children.items():
            walk(f"{prefix}.{name}" if prefix else name, ref_children[name], child)

    walk("", reference, edited)
    return out


def apply_diff(model: nn.Module, diff: dict[str, dict[str, Any]]) -> nn.Module:
    """Replace the submodules listed by :func:`tree_diff`; returns the (possibly new) root."""
    from ..core.modules import set_submodule

    for path in sorted(diff, key=lambda p: p.count(".")):
        new = build(diff[path])
        if path == "":
            model = new
        else:
            set_submodule(model, path, new)
    return model


def _check_state_shapes(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ArchitectureError(
            f"weights do not match the architecture (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); the file may come from another model or nnshrink version"
        )
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise ArchitectureError(
                f"{key}: stored shape {tuple(tensor.shape)} != model shape {tuple(own[key].shape)}"
            )
