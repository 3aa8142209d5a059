"""Model size: dense fp32 bytes, and the real bytes of a saved file."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn


def dense_bytes(model: nn.Module, bytes_per_value: int = 4) -> int:
    """Bytes to store every parameter densely at ``bytes_per_value`` (4 = fp32); buffers excluded.

    This is the "original size" the compression papers divide by.

    Example:
        >>> dense_bytes(nn.Linear(784, 300))
        942000
    """
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel() * bytes_per_value
    return total


def state_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer at their actual dtypes (what a checkpoint holds)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def file_bytes(path: str | os.PathLike) -> int:
    """Size of a file on disk in bytes."""
    return Path(path).stat().st_size
