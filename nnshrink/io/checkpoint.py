"""Checkpoints: safetensors weights + the architecture record and metrics in its metadata.

One ``.safetensors`` file holds everything: tensors under their state-dict names and, in the
string metadata, ``nnshrink.format`` (version), ``nnshrink.architecture`` (JSON: the record of
:mod:`nnshrink.io.record`, a zoo/factory/hf reference + structural edits, or a module tree),
``nnshrink.metrics``, ``nnshrink.extra`` and ``nnshrink.crc32`` (a CRC32 over the header's
tensor index and metadata and over the data, so that corruption is caught, not loaded). Files
open in any safetensors reader; ours rebuild the model without importing anything the file
names (see :func:`load_checkpoint`). Version 1 files (``nnshrink.spec``: a zoo spec) still load.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..utils.atomic import atomic_write_bytes
from .arch import ArchitectureError
from .record import Factory, architecture_of, check_record, legacy_spec, rebuild
from .shapes import MAX_EXPANSION, Signature, budget_for, compare, signature

FORMAT_VERSION = 2
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
CRC_KEY = "nnshrink.crc32"
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"),
                     ("U16", "uint16"), ("U32", "uint32"), ("U64", "uint64")):  # fmt: skip
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)


class CheckpointError(ValueError):
    """A checkpoint is truncated, corrupted, not an nnshrink file, or cannot be rebuilt."""


def _unreadable(where: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{where}: not a readable nnshrink checkpoint (truncated or another format: {why})"
    )


def _parse_header(raw: memoryview, where: str) -> tuple[dict[str, Any], int]:
    """The safetensors JSON header and the data offset, checked without allocating tensors."""
    if len(raw) < 8:
        raise _unreadable(where, f"{len(raw)} bytes")
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > len(raw):
        raise _unreadable(where, f"a {n}-byte header in a {len(raw)}-byte file")
    try:
        header = json.loads(bytes(raw[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _unreadable(where, f"header is not JSON: {str(exc)[:80]}") from None
    if not isinstance(header, dict):
        raise _unreadable(where, "header is not a JSON object")
    return header, 8 + n


def _tensor_index(header: dict[str, Any], data_bytes: int, where: str) -> Signature:
    """``{name: (shape, dtype)}`` from the header, every field checked against the data size."""
    out: Signature = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        ok = isinstance(info, dict) and isinstance(info.get("shape"), list)
        dtype = _DTYPES.get(info["dtype"]) if ok and isinstance(info.get("dtype"), str) else None
        offsets = info.get("data_offsets") if ok else None
        shape = info.get("shape") if ok else None
        if (
            dtype is None
            or not all(type(s) is int and s >= 0 for s in shape)
            or not (isinstance(offsets, list) and len(offsets) == 2)
            or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_bytes
            or offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize
        ):
            raise _unreadable(where, f"tensor {name!r:.80} has a malformed index entry")
        out[name] = (tuple(shape), dtype)
    return out


def _canonical(header: dict[str, Any]) -> bytes:
    meta = {k: v for k, v in (header.get("__metadata__") or {}).items() if k != CRC_KEY}
    body = {k: v for k, v in header.items() if k != "__metadata__"}
    return json.dumps({"tensors": body, "metadata": meta}, sort_keys=True).encode("utf-8")


def _checksum(header: dict[str, Any], data: memoryview) -> int:
    return zlib.crc32(data, zlib.crc32(_canonical(header)))


def _with_checksum(blob: bytes) -> bytes:
    """Add ``nnshrink.crc32`` to the metadata of safetensors bytes (tensor data unchanged)."""
    raw = memoryview(blob)
    header, start = _parse_header(raw, "checkpoint")
    header.setdefault("__metadata__", {})[CRC_KEY] = str(_checksum(header, raw[start:]))
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)  # safetensors keeps the data 8-byte aligned
    return b"".join([len(head).to_bytes(8, "little"), head, raw[start:]])


def save_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save weights + architecture record atomically to a ``.safetensors`` file.

    Args:
        model: a zoo model, a model from :func:`nnshrink.models.from_reference` (possibly
            pruned/decomposed/...), a tree of registered layers, or any module (then loading
            needs ``model=`` or ``factory=``).
        path: destination file.
        metrics: JSON-able numbers to keep with the weights (accuracy, ...).
        extra: any other JSON-able information (training args, ...).

    Example:
        >>> save_checkpoint(models.create("lenet300"), "/tmp/lenet300.safetensors")  # doctest: +SKIP
    """
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
        "nnshrink.architecture": json.dumps(architecture_of(model)),
        "nnshrink.metrics": json.dumps(metrics or {}),
        "nnshrink.extra": json.dumps(extra or {}),
    }
    atomic_write_bytes(path, _with_checksum(st_save(state, metadata=metadata)))
    return Path(path)


def _json_field(metadata: dict[str, Any], key: str, default: str, where: str) -> Any:
    try:
        return json.loads(metadata.get(key, default))
    except (TypeError, ValueError, RecursionError):
        raise CheckpointError(
            f"{where}: metadata {key!r} is not JSON; the file is corrupted"
        ) from None


def _read(path: str | os.PathLike) -> tuple[bytes, Signature, dict[str, Any]]:
    """Parse and verify everything but the tensor bytes: ``(file bytes, index, info)``."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    data = path.read_bytes()
    raw = memoryview(data)
    header, start = _parse_header(raw, where)
    index = _tensor_index(header, len(raw) - start, where)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _unreadable(where, "metadata is not a string map")
    if "nnshrink.format" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file, but not saved by nnshrink (no spec)")
    version_text = metadata["nnshrink.format"]
    if not (version_text.isascii() and version_text.isdigit()) or int(version_text) < 1:
        raise CheckpointError(f"{path}: invalid checkpoint format {version_text!r:.20}; corrupted")
    version = int(version_text)
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this nnshrink supports "
            f"({FORMAT_VERSION}); upgrade nnshrink"
        )
    if version >= 2 and metadata.get(CRC_KEY) != str(_checksum(header, raw[start:])):
        raise CheckpointError(f"{path}: CRC32 mismatch; the file is corrupted (re-save it)")
    if version == 1:
        spec = _json_field(metadata, "nnshrink.spec", "null", where)
        record = None if spec is None else {"zoo": spec}
    else:
        record = _json_field(metadata, "nnshrink.architecture", "null", where)
    try:
        record = check_record(record)
    except ArchitectureError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    info = {
        "format": version,
        "architecture": record,
        "spec": legacy_spec(record),
        "metrics": _json_field(metadata, "nnshrink.metrics", "{}", where),
        "extra": _json_field(metadata, "nnshrink.extra", "{}", where),
    }
    return data, index, info


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint: ``(state_dict, info)``.

    ``info`` holds ``format``, ``architecture`` (the stored record), ``spec`` (the reference as
    :func:`nnshrink.models.spec_of` spells it, plus ``edits``; ``None`` for module trees),
    ``metrics`` and ``extra``. Nothing is imported or built.

    Example:
        >>> state, info = read_checkpoint("/tmp/lenet300.safetensors")  # doctest: +SKIP
    """
    data, _, info = _read(path)
    try:
        state = st_load(data)
    except Exception as exc:  # safetensors raises several error types
        raise _unreadable(str(path), str(exc)[:120]) from None
    return state, info


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    factory: Factory | None = None,
    trust_code: bool = False,
    max_expansion: float = MAX_EXPANSION,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint: rebuild the recorded model, or fill ``model``.

    The architecture is built on the ``meta`` device first and every parameter and buffer is
    compared with the stored tensors; only a match is built for real and filled.

    Args:
        path: a file written by :func:`save_checkpoint`.
        model: load the weights into this module instead (modified in place).
        factory: a reference (``"pkg.mod:build"``, a zoo name, ``"hf:DIR"``) or a callable that
            builds the base model, called with the recorded kwargs; the recorded edits are then
            applied. Overrides the recorded reference (the weights must still fit).
        trust_code: import the factory the file names (it runs that code); needed for files of
            factory-built models when ``factory`` is not given.
        max_expansion: refuse architectures needing more tensor memory than this many times the
            file size (or 16 MiB), see :func:`nnshrink.io.shapes.budget_for`.

    Returns:
        ``(model, info)``; see :func:`read_checkpoint` for ``info``.

    Example:
        >>> model, info = load_checkpoint("/tmp/lenet300.safetensors")  # doctest: +SKIP
    """
    state, info = read_checkpoint(path)
    stored = signature_of_state(state)
    try:
        if model is None:
            model = rebuild(
                info["architecture"],
                stored,
                budget_bytes=budget_for(os.path.getsize(path), max_expansion),
                factory=factory,
                trust_code=trust_code,
            )
        else:
            compare(signature(model), stored)
    except ArchitectureError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model.load_state_dict(state)
    model.eval()
    return model, info


def signature_of_state(state: dict[str, torch.Tensor]) -> Signature:
    """``{name: (shape, dtype)}`` of a state dict."""
    return {k: (tuple(v.shape), v.dtype) for k, v in state.items()}


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
