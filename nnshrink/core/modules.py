"""Module-tree utilities shared by every technique: find, replace and describe submodules."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` with ``new``.

    Args:
        model: the root module.
        name: dotted path as in ``model.named_modules()`` (e.g. ``"layer1.0.conv1"``).
        new: the replacement module.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> set_submodule(m, "0", nn.Identity()); type(m[0]).__name__
        'Identity'
    """
    if not name:
        raise ValueError("cannot replace the root module; assign the new model instead")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if not hasattr(parent, child) and not (isinstance(parent, nn.Sequential) and child.isdigit()):
        raise AttributeError(f"{name!r} is not a submodule of {type(model).__name__}")
    setattr(parent, child, new)


def named_layers(
    model: nn.Module,
    types: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear),
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(name, module)`` for modules of ``types`` that ``filter_fn`` accepts."""
    for name, module in model.named_modules():
        if isinstance(module, types) and (filter_fn is None or filter_fn(module, name)):
            yield name, module


def as_input_tuple(example_inputs: Any) -> tuple[Any, ...]:
    """Normalise example inputs (a tensor, a tuple or a list) to a tuple of positional args."""
    if example_inputs is None:
        raise ValueError("this technique needs example_inputs (e.g. torch.randn(1, 1, 28, 28))")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Move a batch (a tensor, or tuples / lists / dicts of them) to ``device``; others pass.

    Example:
        >>> to_device((torch.zeros(1), {"ids": torch.ones(1)}, "text"), "cpu")[2]
        'text'
    """
    if isinstance(batch, torch.Tensor):
        return (
            batch if batch.device == torch.device(device) else batch.to(device, non_blocking=True)
        )
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the first parameter or buffer (CPU for empty models)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode inside the block; restore its train/eval state after, even on error.

    Example:
        >>> m = nn.Dropout().train()
        >>> with eval_mode(m): m.training
        False
        >>> m.training
        True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def forward_with_hooks(model: nn.Module, example_inputs: Any, handles: Iterable[Any]) -> Any:
    """One eval-mode, no-grad forward pass on ``example_inputs``; then remove the hook ``handles``.

    The shape-probing passes (MACs, feature shapes, layer inputs) all need exactly this: observe
    the layers through forward hooks without changing the model's mode or leaving hooks behind.

    Args:
        model: the model to run (its train/eval state is restored afterwards).
        example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs
            (a Hugging Face model's ``input_ids`` / ``attention_mask``).
        handles: the ``RemovableHandle`` objects of hooks registered for this pass.

    Example:
        >>> seen = []
        >>> lin = nn.Linear(2, 3)
        >>> out = forward_with_hooks(lin, torch.zeros(1, 2),
        ...                          [lin.register_forward_hook(lambda m, i, o: seen.append(o.shape))])
        >>> seen, lin._forward_hooks
        ([torch.Size([1, 3])], OrderedDict())
    """
    try:
        with torch.no_grad(), eval_mode(model):
            if isinstance(example_inputs, Mapping):
                return model(**example_inputs)
            return model(*as_input_tuple(example_inputs))
    finally:
        for handle in handles:
            handle.remove()
