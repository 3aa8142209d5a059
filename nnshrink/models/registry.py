"""Model registry: build any zoo model by name, and remember how it was built.

``create`` stores ``{"name": ..., "kwargs": {...}}`` on the model as ``nnshrink_spec`` so that
checkpoints can rebuild the architecture by name (see :mod:`nnshrink.io`); models built from a
user factory or a Hugging Face directory (:mod:`nnshrink.models.factory`) store
``{"factory": "pkg.mod:fn", "kwargs": {...}}`` or ``{"hf": DIR}`` there instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_INPUTS: dict[str, str] = {}
SPEC_ATTR = "nnshrink_spec"
INPUT_KINDS = ("image", "tokens")


def register_model(
    name: str, *, inputs: str = "image"
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a builder ``fn(num_classes, in_channels, input_size, **kw)`` to the zoo.

    Args:
        name: the zoo name.
        inputs: what the model reads: ``"image"`` (``(N, C, H, W)`` floats) or ``"tokens"``
            (``(N, T)`` token ids; text models ignore the image arguments).
    """
    if inputs not in INPUT_KINDS:
        raise ValueError(f"inputs must be one of {INPUT_KINDS}, got {inputs!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        _INPUTS[name] = inputs
        return fn

    return decorator


def input_kind(name: str) -> str:
    """``"image"`` or ``"tokens"``: what the zoo model ``name`` reads.

    Example:
        >>> input_kind("lenet5"), input_kind("gpt")
        ('image', 'tokens')
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; choose from {list_models()}")
    return _INPUTS[name]


def list_models() -> list[str]:
    """Names accepted by :func:`create`."""
    return sorted(_BUILDERS)


def create(
    name: str,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    **kwargs: Any,
) -> nn.Module:
    """Build a zoo model by name.

    Args:
        name: one of :func:`list_models` (``lenet300``, ``lenet5``, ``mlp``, ``vgg16``,
            ``resnet20``/``32``/``56``, ``mobilenetv2``).
        num_classes: size of the classifier output.
        in_channels: 1 for MNIST-like data, 3 for CIFAR-10.
        input_size: input height (= width) in pixels; models adapt their pooling/flatten to it.
        **kwargs: model-specific options (e.g. ``widths`` for ``mlp``, ``shortcut`` for ResNets).

    Example:
        >>> create("lenet300").nnshrink_spec["name"]
        'lenet300'
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; choose from {list_models()}")
    builder = _BUILDERS[name]
    allowed = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise TypeError(f"model {name!r} does not take {unknown}; it takes {sorted(allowed)}")
    model = builder(
        num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kwargs
    )
    spec_kwargs = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
    spec_kwargs.update({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})
    setattr(model, SPEC_ATTR, {"name": name, "kwargs": spec_kwargs})
    return model


def spec_of(model: nn.Module) -> dict[str, Any] | None:
    """The reference a model was built from, or ``None``.

    ``{"name", "kwargs"}`` for :func:`create`, ``{"factory", "kwargs"}`` for a
    ``module:callable`` factory, ``{"hf"}`` for a Hugging Face directory (a copy).

    Example:
        >>> spec_of(create("lenet300"))["name"]
        'lenet300'
    """
    spec = getattr(model, SPEC_ATTR, None)
    if not isinstance(spec, dict):
        return None
    if "name" in spec:
        return {"name": spec["name"], "kwargs": dict(spec.get("kwargs", {}))}
    if "factory" in spec:
        return {"factory": spec["factory"], "kwargs": dict(spec.get("kwargs", {}))}
    if "hf" in spec:
        return {"hf": spec["hf"]}
    return None
