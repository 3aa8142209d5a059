"""Checkpoints (safetensors + architecture record), architecture descriptions and safe rebuilds."""

from .arch import (
    ArchitectureError,
    build,
    describe,
    layer_kwargs,
    register_module,
    resolve_class,
)
from .checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .diff import apply_diff, attr_changes, tree_diff
from .record import UntrustedCodeError, architecture_of, rebuild
from .shapes import MAX_EXPANSION, budget_for, check_build, checked_build

__all__ = [
    "FORMAT_VERSION",
    "MAX_EXPANSION",
    "ArchitectureError",
    "CheckpointError",
    "UntrustedCodeError",
    "apply_diff",
    "architecture_of",
    "attr_changes",
    "budget_for",
    "build",
    "check_build",
    "checked_build",
    "describe",
    "layer_kwargs",
    "load_checkpoint",
    "read_checkpoint",
    "rebuild",
    "register_module",
    "resolve_class",
    "save_checkpoint",
    "tree_diff",
]
