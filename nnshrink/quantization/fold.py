"""Batch-norm folding: conv/linear followed by BN becomes one conv/linear with a bias.

In eval mode ``BN(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta``, which is a conv
with weight ``W * gamma / sqrt(var + eps)`` (per output channel) and bias
``(b - mean) * gamma / sqrt(var + eps) + beta``. Folding before quantization means the weights that
get quantized are the ones that run, and removes one pass over the activations.

:func:`fold_bn_params` is the pure function; :func:`fuse_conv_bn` builds the module;
:func:`fold_batchnorm` finds the pairs in a model (torch.fx trace, or consecutive pairs in
``nn.Sequential`` containers when the model cannot be traced) and edits it in place.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn

from ..core import set_submodule

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_bn_params(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor,
    running_var: torch.Tensor,
    gamma: torch.Tensor | None,
    beta: torch.Tensor | None,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold BN statistics into a weight (output channels first) and bias; computed in float64.

    Args:
        weight: conv ``(out, in/groups, *k)`` or linear ``(out, in)`` weight.
        bias: layer bias or ``None``.
        running_mean, running_var: BN statistics, shape ``(out,)``.
        gamma, beta: BN affine parameters (``None`` when ``affine=False``).
        eps: BN epsilon.

    Returns:
        ``(folded_weight, folded_bias)`` in the dtype of ``weight``.

    Example:
        >>> w, b = fold_bn_params(torch.ones(2, 1), None, torch.zeros(2), torch.ones(2),
        ...                       torch.full((2,), 2.0), torch.ones(2), 0.0)
        >>> w.flatten().tolist(), b.tolist()
        ([2.0, 2.0], [1.0, 1.0])
    """
    dtype = weight.dtype
    out = weight.shape[0]
    gamma = torch.ones(out, dtype=torch.float64) if gamma is None else gamma.double()
    beta = torch.zeros(out, dtype=torch.float64) if beta is None else beta.double()
    bias = torch.zeros(out, dtype=torch.float64) if bias is None else bias.double()
    factor = gamma / torch.sqrt(running_var.double() + eps)
    new_w = weight.double() * factor.reshape(-1, *([1] * (weight.dim() - 1)))
    new_b = (bias - running_mean.double()) * factor + beta
    return new_w.to(dtype), new_b.to(dtype)


def fuse_conv_bn(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """Return a copy of ``layer`` (Conv*d or Linear) with ``bn`` folded in (eval semantics).

    Example:
        >>> conv, bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2).eval()
        >>> x = torch.randn(1, 1, 5, 5)
        >>> torch.allclose(fuse_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-6)
        True
    """
    if not isinstance(layer, _FOLDABLE) or not isinstance(bn, _BN):
        raise TypeError(
            f"fuse_conv_bn expects Conv1d/2d/3d or Linear followed by BatchNorm, got "
            f"{type(layer).__name__} + {type(bn).__name__}"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats)")
    if layer.weight.shape[0] != bn.running_mean.shape[0]:
        raise ValueError(
            f"{type(layer).__name__} has {layer.weight.shape[0]} outputs but BN has "
            f"{bn.running_mean.shape[0]} channels"
        )
    fused = copy.deepcopy(layer)
    w, b = fold_bn_params(
        layer.weight.detach(),
        None if layer.bias is None else layer.bias.detach(),
        bn.running_mean,
        bn.running_var,
        bn.weight.detach() if bn.affine else None,
        bn.bias.detach() if bn.affine else None,
        bn.eps,
    )
    fused.weight = nn.Parameter(w)
    fused.bias = nn.Parameter(b)
    return fused


@dataclass
class FoldedPair:
    """One folded pair: the layer that absorbed the BN, and the BN (now ``nn.Identity``)."""

    layer: str
    bn: str


class _LeafTracer(fx.Tracer):
    """Treat every module without children as a leaf, so custom ops inside them need not trace."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return len(list(m.children())) == 0 or super().is_leaf_module(m, qualname)


def find_conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Return ``(layer_name, bn_name)`` pairs where the BN consumes only that layer's output.

    Uses a torch.fx trace (modules without children are leaves); when tracing fails, falls back
    to consecutive ``(layer, BN)`` children of ``nn.Sequential`` containers.
    """
    modules = dict(model.named_modules())
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # noqa: BLE001 - any trace failure means: use the sequential fallback
        return _sequential_pairs(model)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, fx.Node)
            and src.op == "call_module"
            and isinstance(modules.get(src.target), _FOLDABLE)
            and len(src.users) == 1
        ):
            pairs.append((src.target, node.target))
    # a module called twice would be folded twice: refuse such pairs
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[node.target] = counts.get(node.target, 0) + 1
    return [(a, b) for a, b in pairs if counts[a] == 1 and counts[b] == 1]


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (a_name, a), (b_name, b) in zip(children, children[1:]):
            if isinstance(a, _FOLDABLE) and isinstance(b, _BN):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def fold_batchnorm(model: nn.Module) -> list[FoldedPair]:
    """Fold every foldable (Conv/Linear → BatchNorm) pair of ``model`` in place.

    The layer gets the folded weight and bias and the BN becomes ``nn.Identity``, so the eval-mode
    output is unchanged (up to float rounding). Use it on a model in eval mode: training-mode BN
    uses batch statistics, which cannot be folded.

    Args:
        model: the model to edit.

    Returns:
        the folded pairs.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> [(p.layer, p.bn) for p in fold_batchnorm(m)], type(m[1]).__name__
        ([('0', '1')], 'Identity')
    """
    pairs = find_conv_bn_pairs(model)
    fused = [
        (layer, bn, fuse_conv_bn(model.get_submodule(layer), model.get_submodule(bn)))
        for layer, bn in pairs
    ]
    for layer, bn, new in fused:  # all fused first, then edited: no half-modified model on error
        set_submodule(model, layer, new)
        set_submodule(model, bn, nn.Identity())
    return [FoldedPair(layer, bn) for layer, bn, _ in fused]
