"""Rules for the layers of Hugging Face ``transformers`` (loaded only if it is imported).

GPT-2 style models use ``transformers.pytorch_utils.Conv1D``: a linear layer whose weight is
stored transposed, ``(in_features, out_features)``, with ``nf``/``nx`` as its widths. Everything
else in those models (attention heads, MLPs, norms, embeddings) is followed from the traced
graph by the generic rules. :mod:`.layer_ops` imports this module only when ``transformers`` is
already in ``sys.modules`` (a user pruning a transformers model has imported it), so nnshrink
never imports it on its own.

Example:
    >>> from transformers.pytorch_utils import Conv1D
    >>> layer = Conv1D(6, 4)                       # 4 -> 6 features
    >>> _conv1d_out(layer, torch.tensor([0, 5])); tuple(layer.weight.shape), layer.nf
    ((4, 2), 2)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from nnshrink.io import register_module

from .layer_ops import index_of, register_layer_ops, slice_tensor_attr


def _conv1d_out(m: nn.Module, keep: torch.Tensor) -> None:
    idx = index_of(keep, m.nf, "output")
    slice_tensor_attr(m, "weight", idx, 1)
    slice_tensor_attr(m, "bias", idx, 0)
    m.nf = idx.numel()


def _conv1d_in(m: nn.Module, keep: torch.Tensor) -> None:
    idx = index_of(keep, m.weight.shape[0], "input")
    slice_tensor_attr(m, "weight", idx, 0)
    m.nx = idx.numel()


def _conv1d_weights(m: nn.Module, dim: str) -> list[tuple[torch.Tensor, Any, int]]:
    return [(m.weight, m.weight.grad, 1 if dim == "out" else 0)]


register_layer_ops(Conv1D, _conv1d_out, _conv1d_in, layout="last", weights=_conv1d_weights)
register_module(Conv1D, lambda m: {"nf": m.nf, "nx": m.weight.shape[0]})
