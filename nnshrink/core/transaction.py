"""All or nothing: a technique either completes or leaves the model bit-identical.

:func:`transaction` records, for every module of the model, its attribute dict (with copies of its
parameter, buffer, submodule and hook tables) and a copy of every tensor's data, gradient and
``requires_grad`` flag. If the block raises, each module gets its attributes back and each
parameter and buffer its data, in place: the objects the user holds (the model, its submodules,
its parameters, an optimizer's references to them) are the same objects with the same values.
:func:`nnshrink.compress_` runs every handler inside one, so no technique needs its own undo.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(2, 2))
    >>> before = model[0].weight.clone()
    >>> try:
    ...     with transaction(model):
    ...         model[0].weight.data.zero_()
    ...         model[0] = nn.Identity()
    ...         raise RuntimeError("half-way")
    ... except RuntimeError:
    ...     pass
    >>> type(model[0]).__name__, torch.equal(model[0].weight, before)
    ('Linear', True)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_TABLES = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")


@contextlib.contextmanager
def transaction(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block; on any exception restore ``model`` exactly, then re-raise.

    Args:
        model: the module the block edits (its whole tree is recorded).
    """
    record = _Record(model)
    try:
        yield model
    except BaseException:
        record.restore()
        raise


class _Record:
    """What :func:`transaction` keeps: module attribute dicts and tensor copies."""

    def __init__(self, model: nn.Module) -> None:
        self.modules: list[tuple[nn.Module, dict[str, Any]]] = []
        self.tensors: dict[int, tuple[torch.Tensor, torch.Tensor, Any, bool]] = {}
        for module in model.modules():
            self.modules.append((module, self._attributes(module)))
            for table in ("_parameters", "_buffers"):
                for tensor in getattr(module, table).values():
                    if tensor is not None and id(tensor) not in self.tensors:
                        self.tensors[id(tensor)] = (
                            tensor,
                            tensor.detach().clone(),
                            tensor.grad,
                            tensor.requires_grad,
                        )

    @staticmethod
    def _attributes(module: nn.Module) -> dict[str, Any]:
        saved = dict(module.__dict__)
        for key, value in module.__dict__.items():
            if key in _TABLES or (key.startswith("_") and "hook" in key):
                saved[key] = copy.copy(value)  # the tables themselves, not what they hold
            elif isinstance(value, list | dict | set) and not _holds_modules_or_tensors(value):
                saved[key] = copy.deepcopy(value)  # plain bookkeeping (head counts, shapes)
        return saved

    def restore(self) -> None:
        for module, attributes in self.modules:
            module.__dict__.clear()
            module.__dict__.update(attributes)
        with torch.no_grad():
            for tensor, data, grad, requires_grad in self.tensors.values():
                tensor.data = data
                tensor.grad = grad
                tensor.requires_grad_(requires_grad)


def _holds_modules_or_tensors(value: Any) -> bool:
    items = value.values() if isinstance(value, dict) else value
    return any(isinstance(v, nn.Module | torch.Tensor) for v in items)
