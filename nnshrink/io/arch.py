"""Describe a module tree as JSON and rebuild it from an allow-list of classes.

A zoo model is rebuilt with ``models.create(name, **kwargs)``. Compression edits the tree
(smaller ``Conv2d`` after pruning, a ``Linear`` replaced by an ``nn.Sequential`` of two after SVD,
a custom shared-weight layer after k-means); :mod:`nnshrink.io.diff` stores only the differences
from a fresh build, as descriptions of the new submodules.

Descriptions are plain dicts: ``{"class": "torch.nn.modules.conv.Conv2d", "kwargs": {...}}`` for
leaves, plus ``"children": {name: description}`` for containers (``Sequential``, ``ModuleList``,
``ModuleDict``). A class name in a file is only ever *looked up* in the table that
:func:`register_module` fills (the torch.nn layers below, nnshrink's own layers, and classes the
user registers); nothing a file names is imported, and kwargs must be plain JSON. We wrote this
rather than pickling modules because pickles execute code on load and break when classes move.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from torch import nn

from .plain import PlainValueError, check_json

InitKwargs = Callable[[nn.Module], dict[str, Any]]
_KWARGS: dict[type[nn.Module], InitKwargs] = {}
_BY_NAME: dict[str, type[nn.Module]] = {}  # the allow-list: class name in a file -> class
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
MAX_TREE_DEPTH = 64  # module nesting; real models stay far below


class ArchitectureError(ValueError):
    """A module cannot be described or rebuilt; the message names the module and the fix."""


class ConstructorError(ArchitectureError):
    """A constructor refused the kwargs (or cannot run on the meta device)."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _allow(cls: type[nn.Module]) -> None:
    _BY_NAME[_qualname(cls)] = cls
    if cls.__module__.startswith("torch.nn.modules."):
        _BY_NAME[f"torch.nn.{cls.__name__}"] = cls  # stable public spelling, if torch moves files


def register_module(cls: type[nn.Module], init_kwargs: InitKwargs) -> None:
    """Teach checkpoints to rebuild ``cls``: ``init_kwargs(instance)`` gives JSON-able kwargs.

    Registration also puts ``cls`` on the allow-list of classes a file may name (by
    ``module.qualname``); files naming other classes are refused, never imported.

    Args:
        cls: the module class.
        init_kwargs: returns constructor kwargs such that ``cls(**kwargs)`` has the same
            parameter and buffer shapes as the instance.

    Example:
        >>> class Scale(nn.Module):
        ...     def __init__(self, n): super().__init__(); self.w = nn.Parameter(torch.ones(n))
        >>> register_module(Scale, lambda m: {"n": m.w.numel()})
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_module needs an nn.Module subclass, got {cls!r}")
    _KWARGS[cls] = init_kwargs
    _allow(cls)


for _container in _CONTAINERS:
    _allow(_container)


def resolve_class(name: Any) -> type[nn.Module]:
    """The allow-listed class a description names; imports nothing.

    Names of nnshrink modules that moved (``nnshrink._deprecated.MOVED_MODULES``) still resolve,
    so files written before the move load.

    Raises:
        ArchitectureError: the name is not on the allow-list.

    Example:
        >>> resolve_class("torch.nn.modules.linear.Linear").__name__
        'Linear'
    """
    if not isinstance(name, str):
        raise ArchitectureError(f"a module class must be named by a string, got {name!r:.80}")
    cls = _BY_NAME.get(name)
    if cls is None:
        from .._deprecated import MOVED_MODULES

        module, _, attr = name.rpartition(".")
        module = MOVED_MODULES.get(module, module)
        cls = _BY_NAME.get(f"{module}.{attr}")
        if cls is None and module.startswith("nnshrink."):
            # a class re-exported by the module that used to define it (SharedWeightLinear from
            # nnshrink.sharing.kmeans, now in sharing.layers): accepted only if allow-listed
            import sys

            found = getattr(sys.modules.get(module), attr, None)
            cls = found if any(found is c for c in _BY_NAME.values()) else None
    if cls is None:
        raise ArchitectureError(
            f"module class {name!r:.120} is not on the allow-list (torch.nn layers nnshrink "
            "knows, nnshrink's own layers, classes registered with nnshrink.io.register_module); "
            "import the code that registers it, or load into your own module with model=..."
        )
    return cls


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


def _child_name(name: Any, where: str) -> str:
    if not (
        isinstance(name, str)
        and name
        and "." not in name
        and (name.isidentifier() or name.isdigit())
    ):
        raise ArchitectureError(f"{where}: {name!r:.80} is not a valid submodule name")
    return name


def _check_description(desc: Any, where: str) -> None:
    if not isinstance(desc, dict) or not isinstance(desc.get("class"), str):
        raise ArchitectureError(f"{where}: a module description is {{'class': ..., ...}}")
    unknown = set(desc) - {"class", "kwargs", "children"}
    if unknown:
        raise ArchitectureError(f"{where}: unknown description keys {sorted(unknown)}")
    kwargs = desc.get("kwargs", {})
    if not isinstance(kwargs, dict) or not all(
        isinstance(k, str) and k.isidentifier() for k in kwargs
    ):
        raise ArchitectureError(f"{where}: 'kwargs' must map argument names to values")
    try:
        check_json(kwargs, f"{where} kwargs")
    except PlainValueError as exc:
        raise ArchitectureError(str(exc)) from None
    if not isinstance(desc.get("children", {}), dict):
        raise ArchitectureError(f"{where}: 'children' must map names to descriptions")


def build(desc: dict[str, Any], *, _where: str = "model", _depth: int = 0) -> nn.Module:
    """Rebuild a module (with fresh weights) from a :func:`describe` description.

    Every class is resolved through :func:`resolve_class` (the allow-list) and every kwarg must
    be plain JSON; the constructor runs only then. Callers that do not trust the sizes build
    inside :func:`nnshrink.io.shapes.check_build` first (the ``meta`` device).

    Raises:
        ArchitectureError: malformed description, unknown class, or a constructor that refuses
            the kwargs.

    Example:
        >>> build({"class": "torch.nn.modules.linear.Linear",
        ...        "kwargs": {"in_features": 3, "out_features": 2}}).weight.shape
        torch.Size([2, 3])
    """
    if _depth > MAX_TREE_DEPTH:
        raise ArchitectureError(f"{_where}: module tree deeper than {MAX_TREE_DEPTH} levels")
    _check_description(desc, _where)
    cls = resolve_class(desc["class"])
    children = {
        _child_name(name, _where): build(child, _where=f"{_where}.{name}", _depth=_depth + 1)
        for name, child in desc.get("children", {}).items()
    }
    if cls in _CONTAINERS:
        if desc.get("kwargs"):
            raise ArchitectureError(f"{_where}: {cls.__name__} takes no kwargs in a description")
        if cls is nn.Sequential:
            return nn.Sequential(OrderedDict(children))
        if cls is nn.ModuleList:
            if sorted(children) != sorted(str(i) for i in range(len(children))):
                raise ArchitectureError(f"{_where}: ModuleList children must be named 0..n-1")
            return nn.ModuleList([children[str(i)] for i in range(len(children))])
        return nn.ModuleDict(children)
    try:
        module = cls(**desc.get("kwargs", {}))
    except ArchitectureError:
        raise
    except Exception as exc:  # constructors raise TypeError, ValueError, RuntimeError, ...
        raise ConstructorError(
            f"{_where}: cannot rebuild {desc['class']} with these kwargs "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    for name, child in children.items():
        if name not in module._modules:
            raise ArchitectureError(f"{_where}: {cls.__name__} has no submodule {name!r}")
        current = module._modules[name]
        if current is None or describe(current) != desc["children"][name]:
            setattr(module, name, child)
    return module
