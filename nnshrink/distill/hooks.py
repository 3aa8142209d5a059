"""Capture intermediate features by module name with forward hooks that are always removed."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(
        f"cannot capture a feature of type {type(value).__name__}; hook a tensor output"
    )


class FeatureCapture:
    """Context manager recording the outputs of named submodules during forward passes.

    Inside the ``with`` block, ``capture.features[name]`` is the output of module ``name`` in the
    latest forward pass (the first output when a module returns a tuple). The hooks are removed on
    exit, also when the block raises.

    Outputs are kept as they are, with their autograd graph (pass ``detach=True`` for monitoring).
    A module whose output is later modified in place (e.g. a BatchNorm followed by
    ``ReLU(inplace=True)``) would be captured after that change: hook the activation or the block
    output instead, or pass ``clone=True``.

    Args:
        model: the model whose submodules are hooked.
        names: qualified names as in ``model.named_modules()`` (``""`` is the model itself).
        detach: store ``output.detach()``.
        clone: store a copy, safe against later in-place ops.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> with FeatureCapture(net, ["1"]) as cap:
        ...     _ = net(torch.zeros(3, 4))
        >>> cap.features["1"].shape
        torch.Size([3, 8])
    """

    def __init__(
        self, model: nn.Module, names: Iterable[str], *, detach: bool = False, clone: bool = False
    ) -> None:
        self.model = model
        self.names = list(dict.fromkeys(names))
        self.detach, self.clone = detach, clone
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        modules = dict(model.named_modules())
        missing = [n for n in self.names if n not in modules]
        if missing:
            hints = {n: difflib.get_close_matches(n, list(modules), n=3) for n in missing}
            raise KeyError(
                f"no submodule named {missing} in {type(model).__name__}; close matches: {hints} "
                f"(see model.named_modules())"
            )
        self._modules = {n: modules[n] for n in self.names}

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            out = _first_tensor(output)
            if self.detach:
                out = out.detach()
            if self.clone:
                out = out.clone()
            self.features[name] = out

        return hook

    def __enter__(self) -> FeatureCapture:
        self.features = {}
        for name, module in self._modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.features:
            raise KeyError(
                f"module {name!r} has not run since the capture started (captured: "
                f"{sorted(self.features)}); is it used in forward?"
            )
        return self.features[name]
