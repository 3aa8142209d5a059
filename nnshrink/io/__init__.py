"""Checkpoints (safetensors + architecture spec) and architecture descriptions."""

from .arch import (
    ArchitectureError,
    apply_diff,
    build,
    describe,
    layer_kwargs,
    register_module,
    tree_diff,
)
from .checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    build_from_spec,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    spec_for,
)

__all__ = [
    "FORMAT_VERSION",
    "ArchitectureError",
    "CheckpointError",
    "apply_diff",
    "build",
    "build_from_spec",
    "describe",
    "layer_kwargs",
    "load_checkpoint",
    "read_checkpoint",
    "register_module",
    "save_checkpoint",
    "spec_for",
    "tree_diff",
]
