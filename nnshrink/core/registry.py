"""Registry from config type to the handler that applies it to a model.

A technique registers its handler once, next to its config::

    @register_handler(MyConfig)
    def _apply(model, config, *, example_inputs=None, filter_fn=None):
        ...

so :func:`nnshrink.compress_` never needs editing when a technique is added.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .config import Config

Handler = Callable[..., Any]
_HANDLERS: dict[type[Config], Handler] = {}


def register_handler(config_type: type[Config]) -> Callable[[Handler], Handler]:
    """Decorator registering ``fn(model, config, *, example_inputs, filter_fn)`` for a config type.

    Args:
        config_type: the :class:`Config` subclass the handler applies.

    Example:
        >>> @register_handler(SomeConfig)  # doctest: +SKIP
        ... def _apply(model, config, *, example_inputs=None, filter_fn=None): ...
    """
    if not (isinstance(config_type, type) and issubclass(config_type, Config)):
        raise TypeError(f"register_handler expects a Config subclass, got {config_type!r}")

    def decorator(fn: Handler) -> Handler:
        if config_type in _HANDLERS and _HANDLERS[config_type] is not fn:
            raise ValueError(f"a handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = fn
        return fn

    return decorator


def handler_for(config: Config) -> Handler:
    """Return the handler registered for ``type(config)`` (or its nearest registered base)."""
    for cls in type(config).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    raise KeyError(
        f"no handler registered for {type(config).__name__}; import the module that defines it "
        f"(registered: {sorted(c.__name__ for c in _HANDLERS)})"
    )


def compress_(
    model: torch.nn.Module,
    config: Config,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[torch.nn.Module, str], bool] | None = None,
) -> Any:
    """Apply a compression technique to ``model`` in place and return the handler's result.

    Args:
        model: any ``nn.Module``; it is modified in place (copy it first to keep the original).
        config: a technique config, e.g. ``StructuredPruning(ratio=0.5)``.
        example_inputs: a tensor or tuple of tensors for techniques that trace or measure the model.
        filter_fn: ``(module, qualified_name) -> bool`` choosing which layers the technique touches.

    Returns:
        Whatever the technique reports (often a per-layer summary); ``None`` for some techniques.

    Example:
        >>> import nnshrink as ns  # doctest: +SKIP
        >>> ns.compress_(model, ns.StructuredPruning(ratio=0.5), example_inputs=x)  # doctest: +SKIP
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"compress_ expects an nn.Module, got {type(model).__name__}")
    if not isinstance(config, Config):
        raise TypeError(f"compress_ expects a Config instance, got {type(config).__name__}")
    return handler_for(config)(model, config, example_inputs=example_inputs, filter_fn=filter_fn)
