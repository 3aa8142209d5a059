"""Calibration data for one-shot methods: normalise batches, observe layer inputs, stop early.

One-shot pruning (Wanda, SparseGPT) and activation-aware low-rank (ASVD, SVD-LLM) need statistics
of what each layer *sees*: the inputs of its forward pass on a few calibration batches. This
module turns the many shapes calibration data comes in into one list of ``(args, kwargs)``
batches and runs the model on them with forward pre-hooks that hand each chosen layer's input
to a callback.

A pass can stop as soon as the layer of interest has been reached (:class:`StopForward` is raised
from its hook and caught here), so processing the layers of a deep model one after the other
costs about half of one full forward per layer, not one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nnshrink.core import eval_mode, model_device

Batch = tuple[tuple[Any, ...], dict[str, Any]]


class StopForward(BaseException):
    """Raised from a hook to end a calibration pass early (a BaseException, so that a model's
    own ``except Exception`` cannot swallow it)."""


def calibration_batches(
    data: Any, limit: int | None = None, *, kind: str = "this technique"
) -> list[Batch]:
    """Normalise calibration data to a list of ``(positional args, keyword args)`` batches.

    Accepted:

    * a tensor: one batch;
    * a tuple of tensors: one batch of positional inputs (as ``compress_``'s ``example_inputs``);
    * a mapping (e.g. a tokenizer's output): one batch of keyword inputs;
    * a list: one batch per element, each a tensor, a tuple of positional inputs or a mapping;
    * any other iterable (a ``DataLoader``): one batch per item, an ``(x, y)`` pair's ``x``, a
      tensor or a mapping.

    Args:
        data: the calibration data (``compress_``'s ``example_inputs``).
        limit: keep at most this many batches (a loader is not read further).
        kind: the technique's name, for the error message.

    Example:
        >>> len(calibration_batches([torch.zeros(2, 3), (torch.zeros(2, 3),)]))
        2
        >>> calibration_batches({"input_ids": torch.zeros(1, 4, dtype=torch.long)})[0][0]
        ()
    """
    if data is None:
        raise ValueError(
            f"{kind} needs calibration data: pass example_inputs= a tensor batch, a list of "
            "batches (tensors, tuples of inputs or dicts of keyword inputs) or a loader of (x, y)"
        )
    if isinstance(data, torch.Tensor):
        items: Iterable[Any] = [data]
        loader = False
    elif isinstance(data, Mapping):
        items, loader = [data], False
    elif isinstance(data, tuple):
        items, loader = [data], False
    elif isinstance(data, list):
        items, loader = data, False
    else:
        items, loader = data, True
    out: list[Batch] = []
    for item in items:
        if limit is not None and len(out) >= limit:
            break
        out.append(_as_batch(item, loader, kind))
    if not out:
        raise ValueError(f"{kind}: the calibration data holds no batch")
    return out


def _as_batch(item: Any, loader: bool, kind: str) -> Batch:
    if isinstance(item, torch.Tensor):
        return (item,), {}
    if isinstance(item, Mapping):
        return (), dict(item)
    if isinstance(item, tuple | list) and item:
        return ((item[0],), {}) if loader else (tuple(item), {})
    raise TypeError(
        f"{kind}: a calibration batch must be a tensor, a tuple of inputs or a dict of keyword "
        f"inputs, got {type(item).__name__}"
    )


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple | list):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def run_batches(
    model: nn.Module,
    batches: Sequence[Batch],
    observers: Mapping[nn.Module, Callable[[torch.Tensor], None]],
    *,
    stop_at: nn.Module | None = None,
) -> None:
    """Run ``model`` on every batch (eval mode, no grad), handing each observed layer its input.

    Args:
        model: the model.
        batches: from :func:`calibration_batches`.
        observers: ``{layer: fn(input tensor)}``, called at each call of the layer, before it runs.
        stop_at: end each pass when this layer has been observed (the rest of the model is not
            run); ``None`` runs every batch through the whole model.

    Example:
        >>> seen = []
        >>> model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> run_batches(model, calibration_batches(torch.ones(2, 3)),
        ...             {model[2]: lambda x: seen.append(x.shape)}, stop_at=model[2])
        >>> seen
        [torch.Size([2, 3])]
    """
    device = model_device(model)

    def make_hook(fn: Callable[[torch.Tensor], None], stop: bool):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            fn(args[0].detach())
            if stop:
                raise StopForward

        return hook

    handles = [
        layer.register_forward_pre_hook(make_hook(fn, layer is stop_at))
        for layer, fn in observers.items()
    ]
    try:
        with torch.no_grad(), eval_mode(model):
            for args, kwargs in batches:
                try:
                    model(*_to(args, device), **_to(kwargs, device))
                except StopForward:
                    pass
    finally:
        for handle in handles:
            handle.remove()


def forward_order(model: nn.Module, batch: Batch, layers: Sequence[nn.Module]) -> list[nn.Module]:
    """The ``layers`` in the order of their first call on ``batch`` (uncalled ones left out).

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> class Flip(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.a, self.b = a, b
        ...     def forward(self, x):
        ...         return self.a(self.b(x))
        >>> forward_order(Flip(), ((torch.ones(1, 2),), {}), [a, b]) == [b, a]
        True
    """
    order: list[nn.Module] = []
    seen: set[int] = set()

    def note(module: nn.Module) -> Callable[[torch.Tensor], None]:
        def fn(_: torch.Tensor) -> None:
            if id(module) not in seen:
                seen.add(id(module))
                order.append(module)

        return fn

    run_batches(model, [batch], {layer: note(layer) for layer in layers})
    return order
