"""Save and load a whole model as a compressed ``.nns`` file.

``save`` encodes every state-dict tensor with the smallest exact encoding that applies (dense,
sparse with relative indices, codebook, sparse + codebook, binary, ternary; index streams
Huffman-coded where that is smaller) and writes the architecture record next to it (a zoo name,
a ``module:callable`` factory or an ``hf:`` directory plus the structural edits, or a tree of
registered layers: :mod:`nnshrink.io.record`), so that ``load`` rebuilds the model with
bit-identical weights. Loading checks every header field and blob length before decoding,
never allocates more than the file justifies, and imports nothing the file names.
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
from nnshrink.io import ArchitectureError, architecture_of, rebuild
from nnshrink.io.record import Factory
from nnshrink.io.shapes import MAX_EXPANSION, Signature, budget_for, compare, signature

from .container import FormatError, read_container, write_container
from .dense import DTYPES, nonzero_mask
from .report import StorageReport, storage_report
from .tensors import TensorOptions, decode_tensor, encode_tensor
from .validate import check_entry

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


def _stored_signature(header: dict[str, Any]) -> Signature:
    return {
        name: (tuple(entry["shape"]), getattr(torch, entry["dtype"]))
        for name, entry in header["tensors"].items()
    }


def _read_checked(
    path: str | os.PathLike, max_expansion: float
) -> tuple[dict[str, Any], dict[str, memoryview]]:
    """Container + every tensor entry verified, the decoded size within budget; nothing decoded."""
    header, blobs = read_container(path)
    if header.get("format") != FORMAT_NAME or not isinstance(header.get("tensors"), dict):
        raise FormatError(f"{path}: header is not an nnshrink model header (no 'tensors')")
    lengths = {name: len(blob) for name, blob in blobs.items()}
    total = 0
    for name, entry in header["tensors"].items():
        try:
            total += check_entry(name, entry, lengths)
        except ValueError as exc:
            raise FormatError(f"{path}: {exc}; the file is corrupted or crafted") from None
    budget = budget_for(os.path.getsize(path), max_expansion)
    if total > budget:
        raise FormatError(
            f"{path}: its tensors would take {total:,} bytes once decoded, more than the file "
            f"justifies ({budget:,}); the file is crafted or corrupted (for a trusted file, pass "
            "max_expansion=...)"
        )
    return header, blobs


def _decode_all(
    path: str | os.PathLike, header: dict[str, Any], blobs: dict[str, memoryview]
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, entry in header["tensors"].items():
        try:
            parts = {part: blobs[blob] for part, blob in entry["blobs"].items()}
            array = decode_tensor(entry, parts)
            if array.shape != tuple(entry["shape"]) or array.dtype != DTYPES[entry["dtype"]]:
                raise ValueError(f"decoded {array.dtype} {array.shape} != the header's")
            if "nnz" in entry and int(np.count_nonzero(nonzero_mask(array))) != entry["nnz"]:
                raise ValueError(f"decoded {np.count_nonzero(nonzero_mask(array))} non-zeros, "
                                 f"the header says {entry['nnz']}")  # fmt: skip
            state[name] = _to_torch(array, entry["dtype"])
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
            raise FormatError(
                f"{path}: tensor {name!r} cannot be decoded ({exc!r:.200}); the file is corrupted "
                "or was written by a newer nnshrink"
            ) from None
    return state


def read_state_dict(
    path: str | os.PathLike, *, max_expansion: float = MAX_EXPANSION
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a ``.nns`` file; return ``(state_dict, header)`` without building a model.

    Every tensor entry is checked against its blobs (:mod:`nnshrink.storage.validate`) and the
    total decoded size against :func:`nnshrink.io.budget_for` before anything is decoded.

    Args:
        path: the file.
        max_expansion: refuse files whose tensors would take more than this many times the file
            size (or 16 MiB) once decoded.

    Raises:
        FormatError: truncated or corrupted file, wrong magic, newer version, bad tensor entry,
            or tensors larger than the file justifies.
    """
    header, blobs = _read_checked(path, max_expansion)
    return _decode_all(path, header, blobs), header


def load(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    factory: Factory | None = None,
    trust_code: bool = False,
    max_expansion: float = MAX_EXPANSION,
) -> nn.Module:
    """Load a ``.nns`` file: rebuild the stored architecture, or fill the given ``model``.

    Everything is read and verified (CRCs, every header field, sizes) before any module is
    built or touched; the architecture is built on the ``meta`` device and compared with the
    stored tensors before it is built for real, so a bad file never leaves ``model``
    half-loaded and never allocates more than it justifies. The returned model is in
    ``eval()`` mode, as with :func:`nnshrink.io.load_checkpoint`.

    Args:
        path: a file written by :func:`save`.
        model: a module to load the weights into (needed when the file stores no architecture).
        factory: a reference (``"pkg.mod:build"``, a zoo name, ``"hf:DIR"``) or a callable
            building the base model, called with the recorded kwargs; the recorded edits are
            applied on top. Overrides the recorded reference (the weights must still fit).
        trust_code: import the factory the file names (this runs that code).
        max_expansion: see :func:`read_state_dict`.

    Raises:
        FormatError: a damaged or crafted file, an architecture that does not fit the stored
            tensors, or a file of a factory-built model without ``factory``/``trust_code``.

    Example:
        >>> model = load("lenet300.nns")  # doctest: +SKIP
    """
    header, blobs = _read_checked(path, max_expansion)
    stored = _stored_signature(header)  # the architecture is checked before anything is decoded
    try:
        if model is None:
            record = header.get("architecture")
            budget = budget_for(os.path.getsize(path), max_expansion)
            model = rebuild(
                record, stored, budget_bytes=budget, factory=factory, trust_code=trust_code
            )
        else:
            compare(signature(model), stored, type(model).__name__)
    except ArchitectureError as exc:
        raise FormatError(f"{path}: {exc}") from None
    model.load_state_dict(_decode_all(path, header, blobs), strict=True)
    return model.eval()
