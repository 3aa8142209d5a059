"""Pruning masks on modules, and the pure functions that turn scores into masks.

A mask is a non-persistent boolean buffer ``<param>_mask`` beside the parameter it prunes (see
:mod:`nnshrink.pruning.unstructured` for why). The helpers here attach, list, re-apply and drop
masks; the functions at the bottom are pure (tensor in, tensor out) and know nothing of modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..core.finalize import register_finalizer

MASK_SUFFIX = "_mask"
LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d),
    "linear": (nn.Linear,),
}


# --------------------------------------------------------------------------------------------
# Masks on modules


def attach_mask(module: nn.Module, name: str, mask: torch.Tensor) -> None:
    """Store ``mask`` as non-persistent buffer ``<name>_mask`` and zero the pruned entries.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> attach_mask(lin, "weight", torch.tensor([[True, False], [False, True]]))
        >>> int((lin.weight == 0).sum())
        2
    """
    param = getattr(module, name)
    if mask.shape != param.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != {name} shape {tuple(param.shape)}")
    mask = mask.to(device=param.device, dtype=torch.bool)
    module.register_buffer(name + MASK_SUFFIX, mask, persistent=False)
    with torch.no_grad():
        param.masked_fill_(~mask, 0.0)


def iter_masks(model: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """Yield ``(qualified param name, module, param name, mask)`` for every attached mask."""
    for mname, module in model.named_modules():
        for bname, buf in module.named_buffers(recurse=False):
            if not bname.endswith(MASK_SUFFIX):
                continue
            pname = bname[: -len(MASK_SUFFIX)]
            if isinstance(getattr(module, pname, None), nn.Parameter):
                yield (f"{mname}.{pname}" if mname else pname), module, pname, buf


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"layer.weight": bool mask}`` for every masked parameter."""
    return {key: mask for key, _, _, mask in iter_masks(model)}


def apply_masks_(model: nn.Module) -> int:
    """Zero every masked weight again; return how many had become non-zero (0 when all was well)."""
    revived = 0
    with torch.no_grad():
        for _, module, pname, mask in iter_masks(model):
            param = getattr(module, pname)
            revived += int((param[~mask] != 0).sum())
            param.masked_fill_(~mask, 0.0)
    return revived


def mask_gradients_(model: nn.Module) -> None:
    """Zero the gradients of pruned weights (call between ``backward`` and ``optimizer.step``)."""
    for _, module, pname, mask in iter_masks(model):
        grad = getattr(module, pname).grad
        if grad is not None:
            grad.masked_fill_(~mask, 0.0)


def make_permanent(model: nn.Module) -> int:
    """Bake the masks into the weights and remove them: plain tensors with zeros remain.

    Also removes ``torch.nn.utils.prune`` reparametrizations (``weight_orig`` + hook) if present.
    Returns the number of masks removed.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4))
        >>> _ = prune_(m, MagnitudePruning(sparsity=0.5))
        >>> make_permanent(m), [b for b, _ in m.named_buffers()]
        (1, [])
    """
    removed = 0
    apply_masks_(model)
    for _, module, pname, _ in list(iter_masks(model)):
        del module._buffers[pname + MASK_SUFFIX]
        removed += 1
    for module in model.modules():  # torch.nn.utils.prune leaves weight_orig + a forward pre-hook
        origs = [n for n, _ in module.named_parameters(recurse=False) if n.endswith("_orig")]
        for pname in [n[: -len("_orig")] for n in origs]:
            if hasattr(module, pname + MASK_SUFFIX):
                torch_prune.remove(module, pname)
                removed += 1
    return removed


def masks_from_zeros(
    model: nn.Module,
    layer_types: Sequence[str] = ("conv", "linear"),
    *,
    include_bias: bool = False,
) -> int:
    """Re-attach masks from exact zeros (e.g. after loading a pruned checkpoint to fine-tune it).

    Returns the number of masks attached (layers with no zero get none).
    """
    types = tuple(t for k in layer_types for t in LAYER_TYPES[k])
    attached = 0
    for module in model.modules():
        if not isinstance(module, types):
            continue
        for pname in ["weight"] + (["bias"] if include_bias else []):
            param = getattr(module, pname, None)
            if isinstance(param, nn.Parameter) and bool((param == 0).any()):
                attach_mask(module, pname, param.detach() != 0)
                attached += 1
    return attached


# --------------------------------------------------------------------------------------------
# Pure functions: scores -> masks


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|w|: Han et al.'s saliency (small weights matter least)."""
    return weight.detach().abs()


def random_scores(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform random scores of ``weight``'s shape: the random-pruning baseline."""
    return torch.rand(weight.shape, generator=generator).to(weight.device)


def mask_from_scores(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the ``round(sparsity * numel)`` lowest scores (ties broken by position).

    Example:
        >>> mask_from_scores(torch.tensor([0.3, -0.1, 0.2, 0.5]).abs(), 0.5)
        tensor([ True, False, False,  True])
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    flat = scores.reshape(-1)
    n_prune = round(sparsity * flat.numel())
    mask = torch.ones(flat.numel(), dtype=torch.bool, device=scores.device)
    if n_prune:
        order = torch.argsort(flat.float(), stable=True)
        mask[order[:n_prune]] = False
    return mask.reshape(scores.shape)


def global_masks(scores: Mapping[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """One threshold over all tensors: prune the ``round(sparsity * total)`` lowest scores overall.

    Example:
        >>> m = global_masks({"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.5, 3.0])}, 0.5)
        >>> m["a"].tolist(), m["b"].tolist()
        ([False, True], [False, True])
    """
    keys = list(scores)
    flat = torch.cat([scores[k].reshape(-1).float() for k in keys])
    mask = mask_from_scores(flat, sparsity)
    out, offset = {}, 0
    for k in keys:
        n = scores[k].numel()
        out[k] = mask[offset : offset + n].reshape(scores[k].shape)
        offset += n
    return out


def _finalize_masks(model: nn.Module) -> list[str]:
    names = sorted({name.rpartition(".")[0] for name, _, _, _ in iter_masks(model)})
    make_permanent(model)
    return names


register_finalizer("masks", _finalize_masks)
