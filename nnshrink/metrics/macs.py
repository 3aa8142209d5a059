"""Multiply-accumulate counts per layer, from forward hooks on leaf modules.

What is counted (FLOPs = 2 x MACs):
  * ``Conv1d/2d/3d`` and transposed convs: ``out_elements * (C_in / groups) * prod(kernel)``
    (grouped and depthwise convs included);
  * ``Linear``: ``out_elements * in_features``;
  * modules that define ``macs(inputs, output) -> int`` (nnshrink's own layers do) or have a counter
    registered with :func:`register_mac_counter`.
Not counted (reported as 0, as in most papers): biases, batch norm, activations, pooling,
element-wise additions and other parameter-free ops. Ops called functionally inside a custom
module's ``forward`` are invisible to hooks: give such modules a ``macs`` method.

We count with hooks rather than ``torch.utils.flop_counter.FlopCounterMode`` so that per-layer
rows carry module names and output shapes and custom layers can say what they cost; the tests
check the two agree on conv/linear models.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.modules import forward_with_hooks

MacCounter = Callable[[nn.Module, tuple[Any, ...], Any], int]
_COUNTERS: dict[type[nn.Module], MacCounter] = {}


def register_mac_counter(module_type: type[nn.Module]) -> Callable[[MacCounter], MacCounter]:
    """Register ``fn(module, inputs, output) -> MACs`` for a module type."""

    def decorator(fn: MacCounter) -> MacCounter:
        _COUNTERS[module_type] = fn
        return fn

    return decorator


@register_mac_counter(nn.Conv1d)
@register_mac_counter(nn.Conv2d)
@register_mac_counter(nn.Conv3d)
def _conv_macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size)
    return output.numel() * (module.in_channels // module.groups) * kernel


@register_mac_counter(nn.ConvTranspose1d)
@register_mac_counter(nn.ConvTranspose2d)
@register_mac_counter(nn.ConvTranspose3d)
def _deconv_macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    kernel = math.prod(module.kernel_size)
    return inputs[0].numel() * (module.out_channels // module.groups) * kernel


@register_mac_counter(nn.Linear)
def _linear_macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    return output.numel() * module.in_features


@register_mac_counter(nn.Bilinear)
def _bilinear_macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    return output.numel() * module.in1_features * module.in2_features


@dataclasses.dataclass
class LayerMacs:
    """One row of a MAC profile."""

    name: str
    type: str
    macs: int
    params: int
    output_shape: tuple[int, ...]


def _counter_for(module: nn.Module) -> MacCounter | None:
    if hasattr(module, "macs") and callable(module.macs):
        return lambda m, i, o: int(m.macs(i, o))
    for cls in type(module).__mro__:
        if cls in _COUNTERS:
            return _COUNTERS[cls]
    return None


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, list | tuple):
        for v in value:
            t = _first_tensor(v)
            if t is not None:
                return t
    return None


@torch.no_grad()
def profile_macs(model: nn.Module, example_inputs: Any) -> list[LayerMacs]:
    """Run one forward pass and return a row per counted layer (in execution order).

    Modules with their own counter (``macs`` method or registered) are counted as a whole and
    their children are not counted again. A module called twice appears twice.

    Args:
        model: any ``nn.Module`` (left in the train/eval mode it was in; eval is used for the pass).
        example_inputs: a tensor or tuple of tensors; the batch size multiplies the MACs.

    Example:
        >>> sum(r.macs for r in profile_macs(nn.Linear(784, 300), torch.zeros(1, 784)))
        235200
    """
    rows: list[LayerMacs] = []
    handles = []
    counted_roots: list[nn.Module] = []
    names = {id(m): n for n, m in model.named_modules()}

    def inside_counted(module: nn.Module) -> bool:
        return any(module is not root and _is_descendant(root, module) for root in counted_roots)

    for module in model.modules():
        counter = _counter_for(module)
        if counter is None:
            continue
        if inside_counted(module):
            continue
        counted_roots.append(module)

        def hook(mod, inputs, output, counter=counter):
            out = _first_tensor(output)
            rows.append(
                LayerMacs(
                    name=names.get(id(mod), type(mod).__name__),
                    type=type(mod).__name__,
                    macs=int(counter(mod, inputs, output)),
                    params=sum(p.numel() for p in mod.parameters()),
                    output_shape=tuple(out.shape) if out is not None else (),
                )
            )

        handles.append(module.register_forward_hook(hook))
    forward_with_hooks(model, example_inputs, handles)
    return rows


def _is_descendant(root: nn.Module, module: nn.Module) -> bool:
    return any(m is module for m in root.modules())


def count_macs(model: nn.Module, example_inputs: Any) -> int:
    """Total MACs of one forward pass on ``example_inputs`` (FLOPs = 2 x this).

    Example:
        >>> from nnshrink.models import create
        >>> count_macs(create("lenet300"), torch.zeros(1, 1, 28, 28))
        266200
    """
    return sum(row.macs for row in profile_macs(model, example_inputs))


def first_sample(example_inputs: Any) -> Any:
    """``example_inputs`` cut to its first sample along dim 0 (tensors, tuples, lists, dicts).

    Pruners judge ``target_macs`` per sample whatever batch they score on: the CLI passes one
    sample, recipes a training batch, and the same number must mean the same thing in both.

    Example:
        >>> first_sample((torch.zeros(8, 3), {"mask": torch.ones(8, 2)}))[1]["mask"].shape
        torch.Size([1, 2])
    """
    if isinstance(example_inputs, torch.Tensor):
        return example_inputs[:1] if example_inputs.ndim else example_inputs
    if isinstance(example_inputs, tuple | list):
        return type(example_inputs)(first_sample(x) for x in example_inputs)
    if isinstance(example_inputs, dict):
        return {k: first_sample(v) for k, v in example_inputs.items()}
    return example_inputs


def count_macs_per_sample(model: nn.Module, example_inputs: Any) -> int:
    """MACs of one forward pass on the first sample of ``example_inputs``.

    Example:
        >>> count_macs_per_sample(nn.Linear(784, 300), torch.zeros(64, 784))
        235200
    """
    return count_macs(model, first_sample(example_inputs))
