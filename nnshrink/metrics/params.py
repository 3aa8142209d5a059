"""Parameter counts: total and non-zero (the survey's storage criterion before encoding)."""

from __future__ import annotations

from torch import nn


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    Example:
        >>> count_params(nn.Linear(784, 300))
        235500
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero (what pruning removes).

    Counts the effective weight when ``torch.nn.utils.prune``-style masks are attached
    (``weight_orig`` * ``weight_mask``) by reading the module attribute, not the raw parameter.
    """
    total = 0
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if name.endswith("_orig") and hasattr(module, name[: -len("_orig")]):
                effective = getattr(module, name[: -len("_orig")])
                total += int((effective != 0).sum())
            else:
                total += int((param != 0).sum())
    return total
