"""Parameter counts: total and non-zero (the survey's storage criterion before encoding)."""

from __future__ import annotations

from torch import nn


def _represented(model: nn.Module, key: str) -> tuple[int, set[int]]:
    """What layers with ``represented_params()`` stand for, and the ids of tensors they cover.

    Compressed layers hold their weights as indices or int8 codes (buffers) beside a few
    parameters (a codebook, a scale): they say how many weights they represent, and those
    replace their own parameters in the counts, so a shared or int8 model is not reported as
    having only its codebooks.
    """
    total, covered = 0, set()
    for module in model.modules():
        represented = getattr(module, "represented_params", None)
        if callable(represented):
            total += int(represented()[key])
            covered.update(id(p) for p in module.parameters())
    return total, covered


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    Layers that store their weights as indices or int8 codes count the weights they represent
    (their ``represented_params()``), not only their codebooks or scales.

    Example:
        >>> count_params(nn.Linear(784, 300))
        235500
    """
    total, seen = (0, set()) if trainable_only else _represented(model, "params")
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
    total, seen = _represented(model, "nonzero_params")
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
