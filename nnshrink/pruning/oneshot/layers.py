"""Which layers one-shot pruning handles, and their inputs as a ``(tokens, in)`` matrix.

Every supported layer computes ``y = W x`` with ``W`` the ``(out, in)`` matrix of
:func:`nnshrink.pruning.masks.weight_matrix`; the calibration statistics are taken over the
matching input rows ``x``:

* ``nn.Linear``: the input's last dimension (every token of every sequence is a row);
* Hugging Face ``Conv1D`` (GPT-2): the same, its weight being stored transposed;
* ``nn.Conv2d`` (``groups=1``, zero padding): the unfolded input patches (``F.unfold``), whose
  ``(in, kh, kw)`` order is the weight's flattening, so a conv is a Linear over patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masks import is_transposed_linear

CANDIDATE_TYPES = (nn.Linear, nn.Conv2d)


def is_candidate(module: nn.Module) -> bool:
    """Linear, Hugging Face ``Conv1D`` or ``Conv2d``: the layers one-shot pruning looks at."""
    return isinstance(module, CANDIDATE_TYPES) or is_transposed_linear(module)


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a candidate layer cannot be pruned one-shot (``None`` when it can).

    Example:
        >>> unsupported_reason(nn.Conv2d(4, 4, 3, groups=4))
        'grouped conv (groups=4): its weight is not one (out, in) matrix'
    """
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return f"grouped conv (groups={module.groups}): its weight is not one (out, in) matrix"
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r}: only zero padding unfolds exactly"
        if isinstance(module.padding, str):
            return f"padding={module.padding!r}: give the padding as numbers"
    return None


def input_rows(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input ``x`` as ``(rows, in)``: one row per token (Linear) or patch (conv).

    Args:
        module: a supported layer.
        x: its input, as its forward receives it.

    Example:
        >>> input_rows(nn.Conv2d(3, 8, 3, padding=1), torch.zeros(2, 3, 5, 5)).shape
        torch.Size([50, 27])
    """
    if isinstance(module, nn.Conv2d):
        patches = F.unfold(
            x,
            module.kernel_size,
            dilation=module.dilation,
            padding=module.padding,
            stride=module.stride,
        )  # (batch, in * kh * kw, positions)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    cols = module.weight.shape[0] if is_transposed_linear(module) else module.in_features
    return x.reshape(-1, cols)
