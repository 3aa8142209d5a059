"""Structured-pruning rules of the zoo's own layers (today: ``ZeroPadShortcut``).

The zoo must not import pruning when it is imported, and pruning must not test zoo classes by
name. So the rule lives here, and :mod:`nnshrink.pruning.structured.layer_ops` imports this
module the first time it looks a rule up (its ``PLUGINS`` list). The import direction at
import time stays models ← pruning; this file, loaded on demand, is the only place where the
zoo talks to pruning.

Example:
    >>> from nnshrink.pruning.structured import ops_for
    >>> ops_for(ZeroPadShortcut(4, 8, 2)).coupling
    'custom'
"""

from __future__ import annotations

from typing import Any

import torch

from nnshrink.pruning.structured.layer_ops import index_of, register_layer_ops

from .resnet import ZeroPadShortcut

__all__ = ["ZeroPadShortcut"]


def _trace(call: Any) -> Any:
    """Input channel i is output channel i; the zero-padded channels are fresh (and free)."""
    x = call.args[0]
    in_labels = call.along(call.infos[0], x, 1)
    pad = call.out.shape[1] - len(in_labels)
    labels = in_labels + (call.fresh(pad) if pad > 0 else [])
    return call.output(1, call.port("out", labels))


def _prune_out(m: ZeroPadShortcut, keep: torch.Tensor) -> None:
    """Output channels [0:in) are the input channels; the rest are zero padding."""
    idx = index_of(keep, m.out_channels, "output")
    m.in_channels = int((idx < m.in_channels).sum())
    m.out_channels = idx.numel()


def _prune_in(m: ZeroPadShortcut, keep: torch.Tensor) -> None:
    """Removing input channel i also removes output channel i (its copy); the padding stays."""
    idx = index_of(keep, m.in_channels, "input")
    m.out_channels -= m.in_channels - idx.numel()
    m.in_channels = idx.numel()


register_layer_ops(ZeroPadShortcut, _prune_out, _prune_in, trace=_trace)
