"""Pruning masks on modules, and the pure functions that turn scores into masks.

A mask is a non-persistent boolean buffer ``<param>_mask`` beside the parameter it prunes (see
:mod:`nnshrink.pruning.unstructured` for why). The helpers here attach, list, re-apply and drop
masks; the functions at the bottom are pure (tensor in, tensor out) and know nothing of modules.

Masks come in three shapes: one count per tensor (:func:`mask_from_scores`), one count per
output row (:func:`row_mask_from_scores`, Wanda's comparison group) and N:M semi-structured
(:func:`nm_mask_from_scores`: ``N`` kept in every ``M`` consecutive weights along the input
dimension, the pattern sparse tensor cores run at 2:4). Layers are seen as an ``(out, in)``
matrix by :func:`weight_matrix`: a Linear's weight as it is, a conv's flattened over
``(in, kh, kw)``, and a Hugging Face GPT-2 ``Conv1D`` (which stores ``(in, out)``) transposed.
"""

from __future__ import annotations

import re
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
        >>> import nnshrink as ns
        >>> m = nn.Sequential(nn.Linear(4, 4))
        >>> _ = ns.compress_(m, ns.MagnitudePruning(sparsity=0.5))
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


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP scores (Lee et al. 2021): ``w_u² / Σ_{v ≥ u} w_v²`` over the tensor sorted by ``|w|``.

    Within one tensor the order is that of ``|w|``, so a per-layer mask is unchanged; across
    tensors the scores are comparable whatever each layer's scale (a BatchNorm after a conv makes
    its weights' scale arbitrary), and the largest weight of every tensor scores 1, so one global
    threshold never empties a layer. Pruned (zero) weights score 0.

    Example:
        >>> lamp_scores(torch.tensor([3.0, -1.0, 2.0])).tolist()  # 9/9, 1/14, 4/13
        [1.0, 0.0714285746216774, 0.3076923191547394]
    """
    w2 = weight.detach().double().pow(2).reshape(-1)
    sorted_w2, order = torch.sort(w2)
    # suffix sums: the mass of the weights at least as large as each one (float64: no drift)
    suffix = sorted_w2.flip(0).cumsum(0).flip(0)
    sorted_scores = torch.where(suffix > 0, sorted_w2 / suffix.clamp_min(1e-300), 0.0)
    scores = torch.empty_like(w2)
    scores[order] = sorted_scores
    return scores.reshape(weight.shape).to(torch.float32)


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


def row_mask_from_scores(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Prune the ``round(sparsity * cols)`` lowest scores of every row of a 2-D score matrix.

    Every row (output) keeps the same number of weights: the per-output comparison group of
    Wanda (Sun et al. 2023), which the paper found far better than one ranking per layer.
    Ties are broken by position, as in :func:`mask_from_scores`.

    Args:
        scores: ``(rows, cols)`` scores; larger means more important.
        sparsity: fraction of each row to prune, in [0, 1].

    Example:
        >>> row_mask_from_scores(torch.tensor([[1.0, 3.0, 2.0, 0.0], [4.0, 1.0, 2.0, 3.0]]), 0.5)
        tensor([[False,  True,  True, False],
                [ True, False, False,  True]])
    """
    if scores.ndim != 2:
        raise ValueError(f"row masks need a 2-D score matrix, got shape {tuple(scores.shape)}")
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    n_prune = round(sparsity * scores.shape[1])
    mask = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if n_prune:
        order = torch.argsort(scores.float(), dim=1, stable=True)
        mask.scatter_(1, order[:, :n_prune], False)
    return mask


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"N:M"`` → ``(N, M)``: keep ``N`` of every ``M`` consecutive weights (``0 < N < M``).

    Example:
        >>> parse_pattern("2:4")
        (2, 4)
    """
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(pattern))
    if match is None:
        raise ValueError(f"pattern must be 'N:M' such as '2:4', got {pattern!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m or m > 256:
        raise ValueError(f"pattern {pattern!r}: need 0 < N < M <= 256 (e.g. '2:4' or '4:8')")
    return n, m


def nm_mask_from_scores(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores of every ``m`` consecutive entries along the last dimension.

    Args:
        scores: ``(..., cols)`` with ``cols`` a multiple of ``m``.
        n: kept per group.
        m: group size.

    Example:
        >>> nm_mask_from_scores(torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 6.0, 1.0]]), 2, 4)
        tensor([[ True, False,  True, False, False,  True,  True, False]])
    """
    if not 0 < n < m:
        raise ValueError(f"N:M needs 0 < N < M, got {n}:{m}")
    cols = scores.shape[-1]
    if cols % m:
        raise ValueError(
            f"an {n}:{m} pattern needs the input dimension to be a multiple of {m}, got {cols}"
        )
    groups = scores.float().reshape(-1, m)
    order = torch.argsort(groups, dim=1, stable=True)
    mask = torch.ones(groups.shape, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, order[:, : m - n], False)
    return mask.reshape(scores.shape)


def is_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """Whether every ``m``-group along the last dimension has at most ``n`` kept entries.

    Example:
        >>> is_nm(torch.tensor([[True, False, True, False]]), 2, 4)
        True
    """
    if mask.shape[-1] % m:
        return False
    return bool((mask.reshape(-1, m).sum(dim=1) <= n).all())


# --------------------------------------------------------------------------------------------
# Layers as (out, in) matrices


def is_transposed_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (GPT-2): a Linear storing ``(in, out)``."""
    weight = getattr(module, "weight", None)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, torch.Tensor)
        and weight.ndim == 2
        and hasattr(module, "nf")
    )


def weight_matrix(module: nn.Module, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's weight (or ``tensor``, shaped like it) as an ``(out, in)`` matrix.

    Linear: the weight; Hugging Face ``Conv1D``: its transpose; conv: ``(out, in * kh * kw)``.
    The result is a view where the layout allows, so writing to it edits the tensor.

    Args:
        module: the layer.
        tensor: a tensor of the weight's shape (scores, a mask); default the weight itself.

    Example:
        >>> weight_matrix(nn.Conv2d(3, 8, 3)).shape
        torch.Size([8, 27])
    """
    tensor = module.weight if tensor is None else tensor
    if is_transposed_linear(module):
        return tensor.T
    return tensor.reshape(tensor.shape[0], -1)


def matrix_to_weight(module: nn.Module, matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`weight_matrix`: an ``(out, in)`` matrix back in the weight's layout.

    Example:
        >>> conv = nn.Conv2d(3, 8, 3)
        >>> torch.equal(matrix_to_weight(conv, weight_matrix(conv)), conv.weight)
        True
    """
    weight = module.weight
    if is_transposed_linear(module):
        return matrix.T.reshape(weight.shape)
    return matrix.reshape(weight.shape)


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
