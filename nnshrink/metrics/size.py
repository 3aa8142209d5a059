"""Model size: dense fp32 bytes, and the real bytes of a saved file."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn


def dense_bytes(model: nn.Module, bytes_per_value: int = 4) -> int:
    """Bytes to store every parameter densely at ``bytes_per_value`` (4 = fp32); buffers excluded.

    This is the "original size" the compression papers divide by. Layers that hold their
    weights as indices or int8 codes count the weights they represent (see
    :func:`~nnshrink.metrics.count_params`): their dense size is that of the float layer.

    Example:
        >>> dense_bytes(nn.Linear(784, 300))
        942000
    """
    from .params import count_params

    return count_params(model) * bytes_per_value


def state_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer at their actual dtypes (what a checkpoint holds)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def file_bytes(path: str | os.PathLike) -> int:
    """Size of a file on disk in bytes."""
    return Path(path).stat().st_size
