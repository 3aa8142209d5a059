"""Checkpoints: safetensors weights + the architecture spec and metrics in its metadata.

One ``.safetensors`` file holds everything: tensors under their state-dict names and, in the
string metadata, ``nnshrink.format`` (version), ``nnshrink.spec`` (JSON: zoo name + kwargs +
structural edits, see :mod:`nnshrink.io.arch`), ``nnshrink.metrics`` and ``nnshrink.extra``. Files
from any safetensors reader open fine; ours rebuild the model by name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..models.registry import SPEC_ATTR, create, list_models, spec_of
from ..utils.atomic import atomic_write_bytes
from .arch import ArchitectureError, _check_state_shapes, apply_diff, tree_diff

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is truncated, not an nnshrink file, or names an unknown architecture."""


def spec_for(model: nn.Module) -> dict[str, Any] | None:
    """Zoo spec plus structural edits of ``model`` (``None`` if not built by ``create``)."""
    spec = spec_of(model)
    if spec is None:
        return None
    reference = create(spec["name"], **spec["kwargs"])
    spec["edits"] = tree_diff(reference, model)
    return spec


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a model (fresh weights) from a stored spec: ``create`` + structural edits."""
    name = spec.get("name")
    if name not in list_models():
        raise CheckpointError(
            f"unknown architecture {name!r}; this nnshrink knows {list_models()} "
            "(upgrade nnshrink, or load with load_checkpoint(path, model=your_module))"
        )
    model = create(name, **spec.get("kwargs", {}))
    model = apply_diff(model, spec.get("edits", {}))
    setattr(model, SPEC_ATTR, {"name": name, "kwargs": dict(spec.get("kwargs", {}))})
    return model


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save weights + architecture spec atomically to a ``.safetensors`` file.

    Args:
        model: a zoo model (possibly pruned/decomposed/...), or any module (then loading needs
            ``model=``).
        path: destination file.
        metrics: JSON-able numbers to keep with the weights (accuracy, ...).
        extra: any other JSON-able information (training args, ...).

    Example:
        >>> save_checkpoint(models.create("lenet300"), "/tmp/lenet300.safetensors")  # doctest: +SKIP
    """
    spec = spec_for(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # safetensors refuses tensors that share memory; clone duplicates (tied weights).
    seen: dict[int, str] = {}
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        if ptr in seen and ptr != -1:
            state[key] = tensor.clone()
        seen[ptr] = key
    metadata = {
        "nnshrink.format": str(FORMAT_VERSION),
        "nnshrink.spec": json.dumps(spec),
        "nnshrink.metrics": json.dumps(metrics or {}),
        "nnshrink.extra": json.dumps(extra or {}),
    }
    data = st_save(state, metadata=metadata)
    atomic_write_bytes(path, data)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and validate a checkpoint: ``(state_dict, info)`` with ``spec``/``metrics``/``extra``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    raw = path.read_bytes()
    try:
        state = st_load(raw)
    except (SafetensorError, Exception) as exc:  # safetensors raises several error types
        raise CheckpointError(
            f"{path}: not a readable nnshrink checkpoint (truncated or another format: {exc})"
        ) from None
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    metadata = header.get("__metadata__") or {}
    if "nnshrink.format" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but not saved by nnshrink (no spec)")
    version = int(metadata["nnshrink.format"])
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this nnshrink supports "
            f"({FORMAT_VERSION}); upgrade nnshrink"
        )
    info = {
        "format": version,
        "spec": json.loads(metadata.get("nnshrink.spec", "null")),
        "metrics": json.loads(metadata.get("nnshrink.metrics", "{}")),
        "extra": json.loads(metadata.get("nnshrink.extra", "{}")),
    }
    return state, info


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint; rebuild the model from its spec unless ``model`` is given.

    Args:
        path: a file written by :func:`save_checkpoint`.
        model: load the weights into this module instead of rebuilding (needed for models that
            were not built by ``nnshrink.models.create``). It is modified in place.

    Returns:
        ``(model, info)`` where ``info`` has ``spec``, ``metrics`` and ``extra``.

    Example:
        >>> model, info = load_checkpoint("/tmp/lenet300.safetensors")  # doctest: +SKIP
    """
    state, info = read_checkpoint(path)
    if model is None:
        if info["spec"] is None:
            raise CheckpointError(
                f"{path}: saved from a model not built by nnshrink.models.create; "
                "pass model=... to load_checkpoint"
            )
        try:
            model = build_from_spec(info["spec"])
        except ArchitectureError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    try:
        _check_state_shapes(model, state)
    except ArchitectureError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model.load_state_dict(state)
    model.eval()
    return model, info


def _register_zoo_modules() -> None:
    # Zoo modules whose shape can change under structured pruning (io depends on models, not
    # the reverse, so the registration lives here).
    from ..models.resnet import ZeroPadShortcut
    from .arch import register_module

    register_module(
        ZeroPadShortcut,
        lambda m: {
            "in_channels": m.in_channels,
            "out_channels": m.out_channels,
            "stride": m.stride,
        },
    )


_register_zoo_modules()
