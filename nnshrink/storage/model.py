"""Save and load a whole model as a compressed ``.nns`` file.

``save`` encodes every state-dict tensor with the smallest exact encoding that applies (dense,
sparse with relative indices, codebook, sparse + codebook, binary, ternary; index streams
Huffman-coded where that is smaller) and writes the architecture description next to it, so that
``load`` rebuilds the model with bit-identical weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from nnshrink._version import __version__
from nnshrink.io import (
    ArchitectureError,
    CheckpointError,
    build,
    build_from_spec,
    describe,
    tree_diff,
)
from nnshrink.models import create
from nnshrink.models.registry import spec_of

from .container import FormatError, read_container, write_container
from .dense import DTYPES
from .report import StorageReport, storage_report
from .tensors import TensorOptions, decode_tensor, encode_tensor

DEFAULT_INDEX_BITS = MappingProxyType({"conv": 4, "fc": 5})
FORMAT_NAME = "nnshrink.nns"
KINDS = ("conv", "fc", "norm", "other")

_CONV = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_NORM = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def tensor_kinds(model: nn.Module) -> dict[str, str]:
    """Map state-dict names to ``conv``/``fc`` (weights of Conv*/Linear), ``norm`` or ``other``.

    Example:
        >>> tensor_kinds(nn.Sequential(nn.Linear(2, 2)))
        {'0.weight': 'fc', '0.bias': 'other'}
    """
    kinds: dict[str, str] = {}
    for prefix, module in model.named_modules():
        dot = f"{prefix}." if prefix else ""
        names = list(module._parameters) + list(module._buffers)
        for local in names:
            kind = "other"
            if isinstance(module, _NORM):
                kind = "norm"
            elif local == "weight" and isinstance(module, _CONV):
                kind = "conv"
            elif local == "weight" and isinstance(module, nn.Linear):
                kind = "fc"
            kinds.setdefault(dot + local, kind)
    return kinds


def _to_numpy(name: str, tensor: Any) -> tuple[np.ndarray, str]:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"state entry {name!r} is a {type(tensor).__name__}, not a tensor")
    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        raise TypeError(
            f"tensor {name!r} has dtype {dtype}, which .nns cannot store; supported: "
            f"{sorted(DTYPES)} (convert it, e.g. dequantize, before saving)"
        )
    return t.numpy(), dtype


def _to_torch(array: np.ndarray, dtype: str) -> torch.Tensor:
    if not (array.flags.c_contiguous and array.flags.writeable):
        array = array.copy()  # (np.ascontiguousarray would turn a 0-d array into 1-d)
    if dtype == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _per_kind(value: Any, kind: str, default: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get(kind, value.get("fc", default) if kind == "other" else default)
    return default if value is None else value


def _options(
    name: str,
    kind: str,
    array: np.ndarray,
    dtype: str,
    encoding: str | Mapping[str, str],
    bits: int | Mapping[str, int] | None,
    index_bits: int | str | Mapping[str, int | str] | None,
    huffman: bool,
    value_dtype: str,
    min_numel: int,
) -> TensorOptions:
    explicit = isinstance(encoding, Mapping) and name in encoding
    chosen = encoding.get(name, "auto") if isinstance(encoding, Mapping) else encoding
    compressible = kind != "norm" and array.size >= min_numel
    if not explicit and not compressible:
        chosen = "dense"  # norm statistics and small tensors stay dense
    return TensorOptions(
        encoding=chosen,
        bits=_per_kind(bits, kind, None),
        index_bits=_per_kind(index_bits, kind, 5),
        huffman=huffman,
        value_dtype=value_dtype,
    )


def architecture_of(model: nn.Module) -> dict[str, Any] | None:
    """JSON description of the model's structure, or ``None`` when it cannot be described.

    Zoo models (``nnshrink.models.create``) are described by name, kwargs and structural edits
    (``{"zoo": spec}``, as in :mod:`nnshrink.io` checkpoints); other modules built only from
    registered layers by their module tree (``{"module": nnshrink.io.describe(model)}``).
    """
    spec = spec_of(model)
    if spec is not None:
        try:
            spec["edits"] = tree_diff(create(spec["name"], **spec["kwargs"]), model)
            return {"zoo": spec}
        except (ArchitectureError, KeyError, TypeError, ValueError):
            pass  # edited beyond what a spec can express: try the whole tree
    try:
        return {"module": describe(model)}
    except ArchitectureError:
        return None


def build_from_architecture(arch: dict[str, Any] | None, where: str) -> nn.Module:
    """Rebuild a model (fresh weights) from :func:`architecture_of`'s description."""
    if not arch:
        raise ValueError(
            f"{where} stores no architecture description (the model had unregistered custom "
            "modules); pass the module to fill: load(path, model=MyModel())"
        )
    try:
        if "zoo" in arch:
            return build_from_spec(arch["zoo"])
        return build(arch["module"])
    except (ArchitectureError, CheckpointError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{where}: cannot rebuild the stored architecture ({exc}); pass the module to fill: "
            "load(path, model=MyModel())"
        ) from exc


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    encoding: str | Mapping[str, str] = "auto",
    bits: int | Mapping[str, int] | None = None,
    index_bits: int | str | Mapping[str, int | str] | None = None,
    huffman: bool = True,
    value_dtype: str = "auto",
    min_numel: int = 256,
    metrics: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> StorageReport:
    """Write ``model`` (architecture + weights) to a compressed ``.nns`` file, atomically.

    Args:
        model: any ``nn.Module``; zoo models (``nnshrink.models.create``) are rebuilt by ``load``.
        path: destination; written to a temporary file in the same directory, then renamed.
        encoding: ``"auto"`` (smallest exact encoding per tensor), one encoding for every
            compressible tensor (``"dense"``, ``"sparse"``, ``"codebook"``, ``"sparse_codebook"``,
            ``"binary"``, ``"ternary"``), or ``{tensor_name: encoding}`` (others ``"auto"``).
        bits: codebook index width, int or ``{"conv": 8, "fc": 5}``; ``None`` = the fewest bits
            that hold the tensor's distinct values. A codebook needing more bits than asked (e.g.
            32 shared values plus the fillers' zero with ``bits=5``) is widened, up to 8 bits.
        index_bits: relative-index width ``k`` for sparse positions, int, ``"auto"`` (best k per
            tensor) or per kind; default ``{"conv": 4, "fc": 5}``.
        huffman: Huffman-code index and position streams where that is smaller.
        value_dtype: storage of float32 values and codebooks: ``"auto"`` (fp16 when exact),
            ``"float32"``, or ``"float16"`` (forced; lossy).
        min_numel: tensors with fewer elements (and all norm-layer tensors) stay dense.
        metrics: JSON-able numbers to keep in the header (accuracy, ...).
        metadata: free-form string pairs to keep in the header.

    Returns:
        The :func:`storage_report` of the written file.

    Example:
        >>> model = nnshrink.models.create("lenet300")  # doctest: +SKIP
        >>> save(model, "lenet300.nns").total.compression  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save expects an nn.Module, got {type(model).__name__}")
    state = model.state_dict()
    if isinstance(encoding, Mapping):
        unknown = sorted(set(encoding) - set(state))
        if unknown:
            raise KeyError(f"encoding names unknown tensors {unknown}; names are state-dict keys")
    for choice in encoding.values() if isinstance(encoding, Mapping) else [encoding]:
        TensorOptions(encoding=choice, value_dtype=value_dtype)  # fail early on a bad choice
    if index_bits is None or isinstance(index_bits, Mapping):
        index_bits = {**DEFAULT_INDEX_BITS, **(index_bits or {})}
    kinds = tensor_kinds(model)
    tensors: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    for name, tensor in state.items():
        array, dtype = _to_numpy(name, tensor)
        kind = kinds.get(name, "other")
        opts = _options(
            name, kind, array, dtype, encoding, bits, index_bits, huffman, value_dtype, min_numel
        )
        try:
            entry, parts = encode_tensor(array, dtype, opts)
        except ValueError as exc:
            raise ValueError(f"cannot encode tensor {name!r}: {exc}") from exc
        entry["kind"] = kind
        entry["blobs"] = {part: f"{name}/{part}" for part in parts}
        tensors[name] = entry
        blobs.update({f"{name}/{part}": data for part, data in parts.items()})
    header = {
        "format": FORMAT_NAME,
        "nnshrink_version": __version__,
        "architecture": architecture_of(model),
        "tensors": tensors,
        "metrics": dict(metrics or {}),
        "metadata": {str(k): str(v) for k, v in (metadata or {}).items()},
    }
    size = write_container(path, header, blobs)
    index = {name: {"length": len(data)} for name, data in blobs.items()}
    return storage_report({**header, "blobs": index}, file_bytes=size)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a ``.nns`` file; return ``(state_dict, header)`` without building a model.

    Raises:
        FormatError: truncated or corrupted file, wrong magic, newer version, bad tensor entry.
    """
    header, blobs = read_container(path)
    if header.get("format") != FORMAT_NAME or not isinstance(header.get("tensors"), dict):
        raise FormatError(f"{path}: header is not an nnshrink model header (no 'tensors')")
    state: dict[str, torch.Tensor] = {}
    for name, entry in header["tensors"].items():
        try:
            parts = {part: blobs[blob] for part, blob in entry["blobs"].items()}
            array = decode_tensor(entry, parts)
            state[name] = _to_torch(array, entry["dtype"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise FormatError(
                f"{path}: tensor {name!r} cannot be decoded ({exc!r}); the file is corrupted or "
                "was written by a newer nnshrink"
            ) from exc
    return state, header


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Load a ``.nns`` file: rebuild the stored architecture, or fill the given ``model``.

    Everything is read and verified (CRCs, shapes, names) before any module is touched, so a bad
    file never leaves ``model`` half-loaded. The returned model is in ``eval()`` mode, as with
    :func:`nnshrink.io.load_checkpoint`.

    Args:
        path: a file written by :func:`save`.
        model: a module to load the weights into (needed when the file stores no architecture).

    Example:
        >>> model = load("lenet300.nns")  # doctest: +SKIP
    """
    state, header = read_state_dict(path)
    if model is None:
        model = build_from_architecture(header.get("architecture"), str(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(n for n in set(own) & set(state) if tuple(own[n].shape) != tuple(state[n].shape))
    if missing or unexpected or wrong:
        raise ValueError(
            f"{path} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatch {wrong[:5]}; load it into the architecture it was "
            "saved from (or call load(path) without a model to rebuild it)"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()
