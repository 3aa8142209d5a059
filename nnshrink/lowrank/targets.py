"""Which layers ``LowRank`` decomposes, and the shapes they are called with.

Candidates are ``nn.Linear`` (SVD) and ``nn.Conv2d`` (CP / Tucker-2) layers, chosen by the
config's ``include`` / ``exclude`` / ``per_layer`` (:class:`nnshrink.core.LayerSelection`).
A layer named *exactly* in ``include`` is a promise: if it cannot be decomposed by the chosen
method the handler raises, instead of skipping it quietly as it does for layers found by a
pattern.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..core import ConfigError, eval_mode, model_device
from ..core.layers import matches
from ._conv import unsupported_conv_reason

if TYPE_CHECKING:
    from .decompose import LayerDecomposition, LowRank


def factorisable_conv_reason(conv: nn.Conv2d) -> str | None:
    """Why CP/Tucker cannot factor ``conv`` (grouped, unsupported options, or 1x1), or ``None``.

    Args:
        conv: the convolution to check.

    Example:
        >>> factorisable_conv_reason(nn.Conv2d(8, 8, 3)) is None
        True
        >>> factorisable_conv_reason(nn.Conv2d(8, 8, 1))
        '1x1 conv has no spatial mode to factor (CP/Tucker); it is a matrix: use svd'
    """
    reason = unsupported_conv_reason(conv)
    if reason is None and tuple(conv.kernel_size) == (1, 1):
        return "1x1 conv has no spatial mode to factor (CP/Tucker); it is a matrix: use svd"
    return reason


def _check_named(config: LowRank, modules: dict[str, nn.Module]) -> None:
    """Exact names in ``include`` must exist and suit the method; patterns must match a layer."""
    wants_conv = config.method in ("cp", "tucker")
    wants_linear = config.method == "svd" or config.linear
    for pattern in config.include:
        if pattern.startswith("@"):
            continue
        module = modules.get(pattern)
        if module is None:
            if not any(matches(pattern, n, m, None) for n, m in modules.items() if n):
                raise ConfigError(
                    f"low-rank.include: {pattern!r} is not a submodule of the model and matches "
                    "none (names are as in model.named_modules())"
                )
            continue
        if isinstance(module, nn.Linear):
            if not wants_linear:
                raise ConfigError(
                    f"low-rank.include: {pattern!r} is nn.Linear; decompose it with method='svd' "
                    "or set linear=True"
                )
        elif isinstance(module, nn.Conv2d):
            if not wants_conv:
                raise ConfigError(
                    f"low-rank.include: {pattern!r} is a Conv2d; method='svd' decomposes "
                    "nn.Linear only, use method='tucker' or 'cp'"
                )
            reason = factorisable_conv_reason(module)
            if reason:
                raise ConfigError(f"low-rank.include: {pattern!r}: {reason}")
        else:
            raise ConfigError(
                f"low-rank.include: {pattern!r} is {type(module).__name__}; supported: nn.Linear "
                "(svd) and nn.Conv2d with groups=1 and a kernel larger than 1x1 (cp, tucker)"
            )


def select_targets(
    model: nn.Module,
    config: LowRank,
    filter_fn: Callable[[nn.Module, str], bool] | None,
) -> tuple[list[tuple[str, nn.Module, str, dict[str, Any]]], list[LayerDecomposition]]:
    """``(name, module, method, per_layer overrides)`` to decompose, and rows for layers left
    alone on purpose (grouped or 1x1 convs for CP/Tucker)."""
    from .decompose import LayerDecomposition

    _check_named(config, dict(model.named_modules()))
    wants_conv = config.method in ("cp", "tucker")
    wants_linear = config.method == "svd" or config.linear
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    chosen, skipped = [], []
    for layer in config.select(candidates, filter_fn=filter_fn):
        name, module = layer.name, layer.module
        if isinstance(module, nn.Linear):
            if wants_linear:
                chosen.append((name, module, "svd", layer.overrides))
            continue
        if not wants_conv:
            continue
        reason = factorisable_conv_reason(module)
        if reason:
            p = sum(t.numel() for t in module.parameters())
            skipped.append(LayerDecomposition(name, config.method, (), 0, 0, p, p, None, reason))
        else:
            chosen.append((name, module, config.method, layer.overrides))
    return chosen, skipped


@torch.no_grad()
def layer_shapes(
    model: nn.Module, modules: list[nn.Module], batch: tuple[tuple[Any, ...], dict[str, Any]]
) -> dict[int, tuple]:
    """(input shape, output shape) of each module's first call on one ``(args, kwargs)`` batch."""
    seen: dict[int, tuple] = {}

    def hook(mod, inputs, output):
        seen.setdefault(id(mod), (tuple(inputs[0].shape), tuple(output.shape)))

    handles = [m.register_forward_hook(hook) for m in modules]
    device = model_device(model)
    args, kwargs = batch
    try:
        with eval_mode(model):
            model(*(a.to(device) if isinstance(a, torch.Tensor) else a for a in args),
                  **{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    return seen
