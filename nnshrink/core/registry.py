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
from .result import CompressResult, Deployable
from .transaction import transaction

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
    measure: bool = True,
) -> CompressResult:
    """Apply a compression technique to ``model`` in place; return what it did.

    The contract, the same for every technique:

    * ``model`` itself is edited (layers sliced, replaced or re-parametrised); keep a
      ``copy.deepcopy`` to hold on to the original.
    * All or nothing: if the technique raises, ``model`` is left bit-identical (same modules,
      same parameter objects, same values) and the error propagates.
    * The return value is a :class:`~nnshrink.core.result.CompressResult`: parameters, non-zero
      parameters, dense bytes and (with tensor ``example_inputs``) MACs per sample before and
      after, the technique's summary, and ``artifact`` when the technique also built a
      deployable runtime module (int8 ONNX Runtime).
    * Techniques with a training-time form (masks, shared codebooks, binary latents, QAT) are
      made plain and final by :func:`nnshrink.finalize`.

    Args:
        model: any ``nn.Module``.
        config: a technique config, e.g. ``StructuredPruning(sparsity=0.5)``.
        example_inputs: a tensor or tuple of tensors for techniques that trace, calibrate or
            measure the model (calibration techniques also take a list of batches or a loader).
        filter_fn: ``(module, qualified_name) -> bool``, on top of the config's
            ``include``/``exclude``.
        measure: count parameters and MACs before and after (``False`` skips it).

    Example:
        >>> import torch, nnshrink as ns
        >>> model = ns.models.create("resnet20", in_channels=1)
        >>> result = ns.compress_(model, ns.StructuredPruning(sparsity=0.5),
        ...                       example_inputs=torch.zeros(1, 1, 28, 28))
        >>> result.after["macs"] < result.before["macs"]
        True
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"compress_ expects an nn.Module, got {type(model).__name__}")
    if not isinstance(config, Config):
        raise TypeError(f"compress_ expects a Config instance, got {type(config).__name__}")
    handler = handler_for(config)
    before = measure_model(model, example_inputs) if measure else {}
    with transaction(model):
        output = handler(model, config, example_inputs=example_inputs, filter_fn=filter_fn)
    summary, artifact = output, None
    if isinstance(output, Deployable):
        summary, artifact = output.summary, output.artifact
    after = measure_model(model, example_inputs) if measure else {}
    return CompressResult(config.kind, config, before, after, summary, artifact)


def measure_model(model: torch.nn.Module, example_inputs: Any = None) -> dict[str, Any]:
    """``params``, ``nonzero_params``, ``dense_bytes`` and, for tensor inputs, ``macs``/sample.

    MACs are ``None`` when ``example_inputs`` is not a tensor (or tuple of tensors) or the model
    cannot be run on it here.
    """
    from ..metrics import count_macs_per_sample, count_nonzero_params, count_params, dense_bytes

    out: dict[str, Any] = {
        "params": count_params(model),
        "nonzero_params": count_nonzero_params(model),
        "dense_bytes": dense_bytes(model),
        "macs": None,
    }
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else example_inputs
    if isinstance(inputs, tuple) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        try:
            out["macs"] = count_macs_per_sample(model, inputs)
        except Exception:  # a model that needs other inputs: MACs are then unknown, not wrong
            out["macs"] = None
    return out
