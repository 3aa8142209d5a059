"""One finishing verb: :func:`finalize` turns training-time forms into plain final layers.

Several techniques keep a training-time form so that fine-tuning can continue: pruning masks,
k-means codebooks (shared-weight layers), binary/ternary latent weights, QAT fake-quantizers,
hashed layers. ``finalize(model)`` makes every such form final, in place: ordinary layers that
hold the pruned / shared / quantized values (what ``.nns`` stores compactly and ONNX exports).
Each family registers its own step with :func:`register_finalizer`, so this module never names a
technique.

Example:
    >>> import nnshrink as ns
    >>> model = ns.models.create("lenet300")
    >>> _ = ns.compress_(model, ns.MagnitudePruning(sparsity=0.9))
    >>> ns.finalize(model)
    {'masks': ['1', '3', '5']}
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .transaction import transaction

Finalizer = Callable[[nn.Module], list[str]]
_FINALIZERS: dict[str, Finalizer] = {}


def register_finalizer(name: str, fn: Finalizer) -> None:
    """Register ``fn(model) -> [names of the layers it made final]`` under ``name``.

    Finalizers run in registration order; each edits the model in place.
    """
    _FINALIZERS[name] = fn


def finalize(model: nn.Module) -> dict[str, list[str]]:
    """Make every training-time form in ``model`` final, in place (all or nothing).

    Returns:
        ``{finalizer: [layer names]}`` for the finalizers that changed something.
    """
    _load_families()
    done: dict[str, list[str]] = {}
    with transaction(model):
        for name, fn in _FINALIZERS.items():
            changed = fn(model)
            if changed:
                done[name] = list(changed)
    return done


def _load_families() -> None:
    # The families register on import; a model can only hold their layers if they were imported,
    # but importing them here keeps finalize() complete when called from a fresh process.
    import importlib

    for family in ("pruning", "quantization", "sharing", "binary"):
        importlib.import_module(f"nnshrink.{family}")
