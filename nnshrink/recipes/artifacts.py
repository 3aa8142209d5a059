"""Write and read a model as the file its suffix names: the one place that maps files to formats.

* ``.safetensors``: a checkpoint (weights + architecture spec), :func:`nnshrink.save_checkpoint`;
* ``.nns``: the compressed format (:func:`nnshrink.save`), of the model made final;
* ``.onnx``: the runtime's own graph for runtime modules (int8 ONNX Runtime sessions), else an
  ONNX export of the model made final.

The byte count every report shows is the size of the file written here.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from torch import nn

SUFFIXES = (".safetensors", ".nns", ".onnx")


def is_runtime_module(model: nn.Module) -> bool:
    """Whether ``model`` runs in another runtime (an ONNX Runtime session behind ``forward``)."""
    return callable(getattr(model, "save", None)) and hasattr(model, "onnx_bytes")


def write_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    example_inputs: Any = None,
    final: bool = False,
    extra: dict[str, Any] | None = None,
    **nns_options: Any,
) -> int:
    """Write ``model`` in the format of ``path``'s suffix; return the bytes on disk.

    Args:
        model: the model (or runtime module).
        path: destination; ``.safetensors``, ``.nns`` or ``.onnx``.
        example_inputs: input batch for ONNX export of PyTorch models.
        final: make training-time forms final first (masks, codebooks, latents: see
            :func:`nnshrink.finalize`); ``.nns`` and ``.onnx`` always are.
        extra: JSON-able metadata for a checkpoint (``info["extra"]`` when loaded).
        **nns_options: options of :func:`nnshrink.storage.save` (``huffman``, ``index_bits``...).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: the output file must end in one of {list(SUFFIXES)}")
    if is_runtime_module(model):
        if suffix != ".onnx":
            raise ValueError(
                f"{path}: this model runs in ONNX Runtime (int8); write it as a .onnx file"
            )
        model.save(path)
    elif suffix == ".safetensors":
        from ..export import deployable_copy
        from ..io import save_checkpoint

        save_checkpoint(deployable_copy(model) if final else model, path, extra=extra)
    elif suffix == ".nns":
        from ..export import deployable_copy
        from ..storage import save

        save(deployable_copy(model), path, **nns_options)
    else:
        from ..export import export_onnx

        if example_inputs is None:
            raise ValueError(f"{path}: ONNX export needs example inputs")
        export_onnx(model, example_inputs, path)
    return path.stat().st_size


def load_model_file(
    path: str | os.PathLike,
    *,
    like: nn.Module | None = None,
    trust_code: bool = False,
    factory: Any = None,
) -> nn.Module:
    """Load a ``.safetensors`` checkpoint or ``.nns`` file.

    Args:
        path: the file.
        like: a module of the same architecture to fill when the file cannot rebuild its own
            (a plain user module saved without a factory reference).
        trust_code: let the file import the model factory it names.
        factory: the model factory (reference string or callable) to rebuild with.
    """
    from ..io import CheckpointError, load_checkpoint
    from ..storage import is_nns_file
    from ..storage import load as load_nns

    path = Path(path)
    options = {"trust_code": trust_code, "factory": factory}
    if is_nns_file(path):
        try:
            return load_nns(path, **_supported(load_nns, options))
        except ValueError:
            if like is None:
                raise
            return load_nns(path, model=like)
    try:
        model, _ = load_checkpoint(path, **_supported(load_checkpoint, options))
    except CheckpointError:
        if like is None:
            raise
        model, _ = load_checkpoint(path, model=like)
    return model


def _supported(fn, options: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    return {k: v for k, v in options.items() if k in params and v not in (None, False)}
