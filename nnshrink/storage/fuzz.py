"""Fuzzing the file readers: damaged and crafted ``.nns`` and ``.safetensors`` files.

:func:`mutations` turns one valid file into many bad ones: truncations at many offsets, single
bit flips, and crafted headers whose checksums are recomputed so that they reach the parser's
semantic checks (hostile class names and factories, huge shapes, out-of-range fields, bad
offsets, JSON bombs). :func:`run_case` loads one and classifies the outcome; every case must be
*refused* with the reader's own error (``FormatError`` / ``CheckpointError``): no import, no
silent load, no other exception, no code run, and memory bounded by the file size. The suite
runs a short seeded pass (``tests/storage/test_fuzz.py``), ``benchmarks/fuzz_loaders.py`` a
long one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import struct
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .container import BLOBS_KEY, MAGIC, PREFIX, PREFIX_SIZE, decode_container

Mutation = tuple[str, str, bytes]  # (kind, label, file bytes)
HOSTILE_CLASSES = ("os.system", "antigravity.Fly", "this.Zen", "subprocess.Popen",
                   "nnshrink.models.create", "builtins.eval", "torch.nn.modules.module.Module",
                   "importlib.import_module")  # fmt: skip
HOSTILE_MODULES = ("antigravity", "this", "subprocess_fuzz_marker")
PWNED = "pwned"  # a file that hostile code in a crafted header would create


@dataclasses.dataclass
class Outcome:
    """What one load did: ``refused`` (the reader's error), ``loaded``, or ``error`` (other)."""

    kind: str
    label: str
    result: str
    error: str
    new_modules: list[str]
    peak_bytes: int
    file_bytes: int
    code_ran: bool


def _flip(data: bytes, pos: int, bit: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 1 << bit
    return bytes(out)


def _common(data: bytes, rng: random.Random, truncations: int, flips: int) -> Iterator[Mutation]:
    n = len(data)
    cuts = sorted({0, 1, 7, 8, 23, 24, 25, n - 1} | {rng.randrange(n) for _ in range(truncations)})
    for cut in cuts:
        if 0 <= cut < n:
            yield "truncate", f"cut@{cut}", data[:cut]
    for _ in range(flips):
        pos, bit = rng.randrange(n), rng.randrange(8)
        yield "flip", f"flip@{pos}.{bit}", _flip(data, pos, bit)
    yield "flip", "appended", data + b"\x00"


# -- .nns -------------------------------------------------------------------------------------
def _nns(header: dict[str, Any], data: bytes, version: int = 2) -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return PREFIX.pack(MAGIC, version, len(head), zlib.crc32(head)) + head + data


def _nns_parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    (head_len,) = struct.unpack_from("<Q", data, 12)
    header = json.loads(data[PREFIX_SIZE : PREFIX_SIZE + head_len])
    return header, data[PREFIX_SIZE + head_len :]


def _architecture_cases(workdir: Path) -> list[tuple[str, Any]]:
    marker = str(workdir / PWNED)
    cases: list[tuple[str, Any]] = [
        (f"class {name}", {"module": {"class": name, "kwargs": {}}}) for name in HOSTILE_CLASSES
    ]
    cases += [
        ("module os.system cmd", {"module": {"class": "os.system", "kwargs": {"command": f"touch {marker}"}}}),
        ("zoo os.system", {"zoo": {"name": "os.system", "kwargs": {}, "edits": {}}}),
        ("zoo huge widths", {"zoo": {"name": "mlp", "kwargs": {"widths": [10**6, 10**6]}, "edits": {}}}),
        ("zoo huge input", {"zoo": {"name": "mlp", "kwargs": {"input_size": 10**5}, "edits": {}}}),
        ("zoo bad kwargs", {"zoo": {"name": "mlp", "kwargs": {"widths": "abc"}, "edits": {}}}),
        ("factory os:system", {"factory": {"ref": "os:system", "kwargs": {"command": f"touch {marker}"}}}),
        ("factory antigravity", {"factory": {"ref": "antigravity:fly", "kwargs": {}}}),
        ("factory this", {"factory": {"ref": "this:s", "kwargs": {}}}),
        ("factory expression", {"factory": {"ref": "__import__('os').system", "kwargs": {}}}),
        ("hf missing dir", {"hf": {"dir": str(workdir / "no-such-model")}}),
        ("hf code dir", {"hf": {"dir": "/etc"}}),
        ("unknown kind", {"pickle": {"data": "gASVAAAAAAAAAAA="}}),
        ("two kinds", {"zoo": {"name": "mlp"}, "module": {"class": "torch.nn.ReLU"}}),
    ]  # fmt: skip
    return cases


def _edit_cases(zoo: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    def with_edits(edits: dict[str, Any]) -> dict[str, Any]:
        return {"zoo": {**zoo, "edits": {**zoo.get("edits", {}), **edits}}}

    return [
        ("edit hostile class", with_edits({"1": {"class": "os.system", "kwargs": {}}})),
        ("edit dunder path", with_edits({"1.__class__": {"class": "torch.nn.ReLU"}})),
        ("edit unknown path", with_edits({"nope.x": {"class": "torch.nn.ReLU"}})),
        ("edit attr forward", with_edits({"1": {"attrs": {"forward": 1}}})),
        ("edit attr dunder", with_edits({"1": {"attrs": {"__dict__": {}}}})),
        ("edit attr weight", with_edits({"1": {"attrs": {"weight": 0}}})),
        ("edit huge linear", with_edits({"1": {"class": "torch.nn.Linear",
                                               "kwargs": {"in_features": 10**6, "out_features": 10**6}}})),
        ("edit negative linear", with_edits({"1": {"class": "torch.nn.Linear",
                                                   "kwargs": {"in_features": -1, "out_features": 2}}})),
    ]  # fmt: skip


_TENSOR_FIELD_CASES = [
    ("shape huge", {"shape": [10**6, 10**6], "numel": 10**12}),
    ("shape negative", {"shape": [-1, 4]}),
    ("shape float", {"shape": [2.5]}),
    ("numel off", {"numel": 1}),
    ("dtype object", {"dtype": "object"}),
    ("dtype float128", {"dtype": "float128"}),
    ("dtype list", {"dtype": ["float32"]}),
    ("encoding pickle", {"encoding": "pickle"}),
    ("index_bits 0", {"index_bits": 0}),
    ("index_bits 9", {"index_bits": 9}),
    ("index_bits str", {"index_bits": "5"}),
    ("bits 0", {"bits": 0}),
    ("bits 64", {"bits": 64}),
    ("codebook_size huge", {"codebook_size": 10**9}),
    ("entries huge", {"entries": 10**12}),
    ("entries negative", {"entries": -1}),
    ("value_dtype int8", {"value_dtype": "int8"}),
    ("coding unknown", {"positions_coding": "lzma", "indices_coding": "lzma"}),
    ("scales_shape bad", {"scales_shape": [10**6]}),
    ("blobs elsewhere", {"blobs": {"values": "no/such/blob"}}),
    ("nnz huge", {"nnz": 10**15}),
]


def _nns_crafted(data: bytes, workdir: Path) -> Iterator[Mutation]:
    header, region = _nns_parts(data)
    arch = header.get("architecture") or {}

    def emit(label: str, new_header: dict[str, Any], version: int = 2, tail: bytes = region):
        return "crafted", label, _nns(new_header, tail, version)

    for label, record in _architecture_cases(workdir):
        yield emit(label, {**header, "architecture": record})
    if "zoo" in arch:
        for label, record in _edit_cases(arch["zoo"]):
            yield emit(label, {**header, "architecture": record})
    name = next(iter(header["tensors"]))  # one tensor gets every case; files hold several encodings
    for label, change in _TENSOR_FIELD_CASES:
        tensors = copy.deepcopy(header["tensors"])
        tensors[name].update(change)
        yield emit(f"{name}: {label}", {**header, "tensors": tensors})
    encodings = {}
    for name, entry in header["tensors"].items():
        encodings.setdefault(entry["encoding"], name)
    for encoding, name in encodings.items():
        for label, change in _TENSOR_FIELD_CASES[4:]:
            tensors = copy.deepcopy(header["tensors"])
            tensors[name].update(change)
            yield emit(f"{encoding} {name}: {label}", {**header, "tensors": tensors})
    index = header[BLOBS_KEY]
    first = next(iter(index))
    for label, change in [("offset negative", {"offset": -8}), ("offset huge", {"offset": 2**62}),
                          ("length huge", {"length": 2**62}), ("length negative", {"length": -1}),
                          ("crc huge", {"crc32": 2**40}), ("offset str", {"offset": "0"}),
                          ("length bool", {"length": True})]:  # fmt: skip
        blobs = copy.deepcopy(index)
        blobs[first].update(change)
        yield emit(f"blob {label}", {**header, BLOBS_KEY: blobs})
    yield emit("tensors list", {**header, "tensors": []})
    yield emit("format other", {**header, "format": "other"})
    yield emit("tensor missing", {**header, "tensors": dict(list(header["tensors"].items())[1:])})
    yield emit("version 0", header, version=0)
    yield emit("version 99", header, version=99)
    yield "crafted", "nesting bomb", _nns_raw_header(b"[" * 100_000 + b"]" * 100_000, region)
    yield "crafted", "huge int", _nns_raw_header(b'{"x": ' + b"9" * 10_000 + b"}", region)
    yield (
        "crafted",
        "nan metrics",
        _nns_raw_header(json.dumps({**header, "metrics": {"x": float("nan")}}).encode(), region),
    )
    yield "crafted", "not utf8", _nns_raw_header(b'{"\xff": 1}', region)


def _nns_raw_header(head: bytes, region: bytes) -> bytes:
    return PREFIX.pack(MAGIC, 2, len(head), zlib.crc32(head)) + head + region


# -- .safetensors -----------------------------------------------------------------------------
def _st_parts(data: bytes) -> tuple[dict[str, Any], bytes]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _st(header: dict[str, Any], region: bytes, checksum: bool = True) -> bytes:
    from ..io.checkpoint import CRC_KEY, _checksum

    header = copy.deepcopy(header)
    meta = header.setdefault("__metadata__", {})
    if checksum and isinstance(meta, dict):
        meta[CRC_KEY] = str(_checksum(header, memoryview(region)))
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return len(head).to_bytes(8, "little") + head + region


def _st_crafted(data: bytes, workdir: Path) -> Iterator[Mutation]:
    header, region = _st_parts(data)
    meta = header["__metadata__"]

    def with_meta(**changes: str) -> dict[str, Any]:
        return {**header, "__metadata__": {**meta, **changes}}

    arch = json.loads(meta["nnshrink.architecture"]) or {}
    records = _architecture_cases(workdir)
    if "zoo" in arch:
        records += _edit_cases(arch["zoo"])
    for label, record in records:
        yield (
            "crafted",
            label,
            _st(with_meta(**{"nnshrink.architecture": json.dumps(record)}), region),
        )
    for label, version in [("version 99", "99"), ("version 0", "0"), ("version neg", "-1"),
                           ("version text", "two"), ("version unicode", "\u0662")]:  # fmt: skip
        yield "crafted", label, _st(with_meta(**{"nnshrink.format": version}), region)
    yield (
        "crafted",
        "v1 hostile spec",
        _st(
            with_meta(
                **{"nnshrink.format": "1", "nnshrink.spec": json.dumps({"name": "os.system"})}
            ),
            region,
        ),
    )
    yield "crafted", "metrics bomb", _st(with_meta(**{"nnshrink.metrics": "[" * 100_000}), region)
    yield (
        "crafted",
        "architecture bomb",
        _st(with_meta(**{"nnshrink.architecture": "[" * 50_000 + "]" * 50_000}), region),
    )
    from ..io.checkpoint import CRC_KEY

    unsigned = {**header, "__metadata__": {k: v for k, v in meta.items() if k != CRC_KEY}}
    yield "crafted", "checksum removed", _st(unsigned, region, checksum=False)
    name = next(k for k in header if k != "__metadata__")
    for label, change in [("shape huge", {"shape": [10**6, 10**6]}), ("shape negative", {"shape": [-4]}),
                          ("dtype object", {"dtype": "O"}), ("offsets negative", {"data_offsets": [-8, 0]}),
                          ("offsets huge", {"data_offsets": [0, 2**62]}), ("offsets float", {"data_offsets": [0.0, 4.0]})]:  # fmt: skip
        tensors = copy.deepcopy(header)
        tensors[name].update(change)
        yield "crafted", f"{name}: {label}", _st(tensors, region)
    yield (
        "crafted",
        "tensor renamed",
        _st({("0.evil" if k == name else k): v for k, v in header.items()}, region),
    )


# -- random structured mutations -------------------------------------------------------------
_POOL = [0, -1, 1, 7, 2**31, 2**63, 10**12, -(10**12), 1.5, True, None, "x", "", [], {}, [0],
         [10**6, 10**6], [-1], "float64", "object", "int8", "O", "os.system",
         "antigravity.Fly", "nnshrink.models.create", {"class": "os.system"}]  # fmt: skip
_ARCH_KEYS = ("class", "name", "ref", "dir")


def _leaves(obj: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(obj, list) and obj:
        for i, value in enumerate(obj):
            yield from _leaves(value, (*path, i))
    yield path


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    obj = copy.copy(obj)
    obj[path[0]] = _set(obj[path[0]], path[1:], value)
    return obj


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def _nns_field(path: tuple) -> bool:
    """Fields a reader must validate (free-form metrics/metadata and descriptive ``kind`` aside)."""
    if len(path) >= 3 and path[0] == "tensors":
        return path[2] != "kind"
    if len(path) >= 3 and path[0] == BLOBS_KEY:
        return True
    return len(path) >= 2 and path[0] == "architecture" and path[-1] in _ARCH_KEYS


def _random_value(rng: random.Random, old: Any) -> Any:
    for _ in range(10):
        value = copy.deepcopy(rng.choice(_POOL))
        if value != old or type(value) is not type(old):
            return value
    return "x"


def field_mutations(data: bytes, fmt: str, rng: random.Random, count: int) -> Iterator[Mutation]:
    """``count`` crafted files, each with one validated header field set to a hostile value
    (wrong type, negative, huge, a hostile class name) and its checksum recomputed."""
    if fmt == "nns":
        header, region = _nns_parts(data)
        paths = [p for p in _leaves(header) if _nns_field(p)]
        for _ in range(count):
            path = rng.choice(paths)
            value = _random_value(rng, _get(header, path))
            yield (
                "field",
                f"{'/'.join(map(str, path))}={value!r:.40}",
                _nns(_set(header, path, value), region),
            )
        return
    header, region = _st_parts(data)
    meta = header["__metadata__"]
    arch = json.loads(meta["nnshrink.architecture"])
    tensor_paths = [
        p for p in _leaves({k: v for k, v in header.items() if k != "__metadata__"}) if len(p) >= 2
    ]
    arch_paths = [p for p in _leaves(arch) if p and p[-1] in _ARCH_KEYS]
    for _ in range(count):
        if arch_paths and rng.random() < 0.3:
            path = rng.choice(arch_paths)
            value = _random_value(rng, _get(arch, path))
            new_meta = {**meta, "nnshrink.architecture": json.dumps(_set(arch, path, value))}
            new = {**header, "__metadata__": new_meta}
            label = f"architecture/{'/'.join(map(str, path))}={value!r:.40}"
        else:
            path = rng.choice(tensor_paths)
            value = _random_value(rng, _get(header, path))
            new = _set(header, path, value)
            label = f"{'/'.join(map(str, path))}={value!r:.40}"
        yield "field", label, _st(new, region)


def mutations(
    data: bytes,
    fmt: str,
    workdir: Path,
    *,
    seed: int = 0,
    truncations: int = 40,
    flips: int = 60,
    fields: int = 0,
) -> Iterator[Mutation]:
    """Bad variants of a valid file: truncations, bit flips, crafted headers (valid checksums).

    Args:
        data: a valid ``.nns`` (``fmt="nns"``) or ``.safetensors`` checkpoint (``"safetensors"``).
        fmt: which format ``data`` is.
        workdir: where hostile headers point their side effects (never created if all is well).
        seed: for the random offsets and bits.
        truncations, flips: how many random ones (a few fixed offsets are always included).
        fields: how many random single-field mutations (:func:`field_mutations`) to add.

    Example:
        >>> kinds = {k for k, _, _ in mutations(data, "nns", tmp)}  # doctest: +SKIP
    """
    rng = random.Random(seed)
    yield from _common(data, rng, truncations, flips)
    if fmt == "nns":
        decode_container(data)  # the base file must be valid
        yield from _nns_crafted(data, workdir)
    elif fmt == "safetensors":
        yield from _st_crafted(data, workdir)
    else:
        raise ValueError(f"fmt must be 'nns' or 'safetensors', got {fmt!r}")
    yield from field_mutations(data, fmt, rng, fields)


def warm_up() -> None:
    """Trigger the lazy imports torch makes on its first meta-tensor arithmetic (its own
    ``torch._dynamo``, sympy, ...), so that import checks see only what a file causes."""
    import torch

    with torch.device("meta"):
        x = torch.arange(4)
        (((x ^ 1) >> 1) & 1 % 3 * 2).to(torch.float32).reshape(2, 2)


def run_case(
    kind: str,
    label: str,
    data: bytes,
    load: Callable[[Path], Any],
    expected: type[BaseException],
    workdir: Path,
) -> Outcome:
    """Write ``data`` to a file, ``load`` it, and classify what happened.

    ``tracemalloc`` measures the peak of Python and numpy allocations during the load; new
    ``sys.modules`` entries and the :data:`PWNED` marker reveal imports and code execution.
    """
    path = workdir / "case.bin"
    path.write_bytes(data)
    before = set(sys.modules)
    tracemalloc.start()
    try:
        load(path)
        result, error = "loaded", ""
    except expected as exc:
        result, error = "refused", f"{type(exc).__name__}: {str(exc)[:160]}"
    except Exception as exc:  # the finding: a reader error of another type
        result, error = "error", f"{type(exc).__name__}: {str(exc)[:160]}"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    new = sorted(set(sys.modules) - before)
    ran = (workdir / PWNED).exists()
    return Outcome(kind, label, result, error, new, peak, len(data), ran)
