"""Module-tree utilities shared by every technique: find, replace and describe submodules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the first parameter or buffer (CPU for empty models)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
