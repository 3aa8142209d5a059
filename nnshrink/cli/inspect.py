"""``nnshrink inspect FILE.nns [--json] [--verify]``: header, per-tensor encodings and sizes."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Group
from rich.table import Table

from nnshrink.storage import FormatError, read_header, read_state_dict, storage_report

from .common import CLIError, add_json_arg, emit


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` command."""
    p = subparsers.add_parser(
        "inspect", help="show the header, per-tensor encodings and stored sizes of a .nns file"
    )
    p.add_argument("file", help="a .nns file written by nnshrink (nnshrink.storage.save)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="also check every blob's CRC32 and decode every tensor",
    )
    add_json_arg(p)
    p.set_defaults(func=run)


def inspect_file(path: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """Header fields and the storage report of a ``.nns`` file as plain JSON.

    Args:
        path: the ``.nns`` file.
        verify: check every CRC and decode every tensor (reads the whole file).

    Example:
        >>> inspect_file("lenet300.nns")["report"]["total"]["compression"]  # doctest: +SKIP
        40.2
    """
    header = read_header(path, with_blob_index=True)
    if verify:
        read_state_dict(path)
    report = storage_report(path)
    info = {k: v for k, v in header.items() if k not in ("blobs", "tensors")}
    info["file"] = str(path)
    info["verified"] = verify
    info["tensors"] = {
        name: {k: v for k, v in entry.items() if k != "blobs"}
        for name, entry in header["tensors"].items()
    }
    info["report"] = report.to_dict()
    return info


def _kb(n: int) -> str:
    return f"{n / 1024:.1f}"


def _architecture_text(arch: dict[str, Any] | None) -> str:
    if not arch:
        return "none stored (load with load(path, model=...))"
    if "zoo" in arch:
        spec = arch["zoo"]
        kwargs = ", ".join(f"{k}={v}" for k, v in spec.get("kwargs", {}).items())
        edits = len(spec.get("edits") or {})
        return f"{spec['name']}({kwargs})" + (f" + {edits} structural edits" if edits else "")
    if "factory" in arch:
        spec = arch["factory"]
        edits = len(spec.get("edits") or {})
        return f"your factory {spec['ref']}" + (f" + {edits} structural edits" if edits else "") + (
            " (load with --model REF or --trust-code)")  # fmt: skip
    if "hf" in arch:
        edits = len(arch["hf"].get("edits") or {})
        return f"Hugging Face model hf:{arch['hf']['dir']}" + (f" + {edits} edits" if edits else "")
    return f"module tree rooted at {arch['module']['class']}"


def render(info: dict[str, Any]) -> Group:
    """Rich tables for :func:`inspect_file`'s result."""
    summary = Table(title=f"{info['file']}", show_header=False)
    summary.add_column("field", style="bold")
    summary.add_column("value")
    summary.add_row("architecture", _architecture_text(info.get("architecture")))
    summary.add_row("written by", f"nnshrink {info.get('nnshrink_version', '?')}")
    for key, value in sorted((info.get("metrics") or {}).items()):
        summary.add_row(f"metric {key}", str(value))
    for key, value in sorted((info.get("metadata") or {}).items()):
        summary.add_row(key, value)
    report = info["report"]
    total = report["total"]
    summary.add_row(
        "file size",
        f"{report['file_bytes']:,} B ({report['dense_file_ratio']:.1f}x smaller than dense), "
        f"of which header {report['overhead_bytes']:,} B",
    )
    if info.get("verified"):
        summary.add_row("integrity", "all CRC32 checks passed, all tensors decode")

    table = Table(title="tensors (sizes in KiB; bits per stored entry)")
    for column in ("tensor", "shape", "encoding", "kept", "w bits", "idx bits"):
        table.add_column(column, justify="left" if column in ("tensor", "encoding") else "right")
    for column in ("values", "positions", "codebook", "stored", "dense", "rate"):
        table.add_column(column, justify="right")
    for row in [*report["rows"], total]:
        entry = info["tensors"].get(row["name"], {})
        shape = "x".join(map(str, entry.get("shape", []))) or ("-" if entry else "")
        encoding = row["encoding"]
        if entry.get("positions_coding") == "huffman" or entry.get("indices_coding") == "huffman":
            encoding += "+huffman"
        table.add_row(
            row["name"],
            shape,
            encoding,
            f"{100 * row['kept']:.1f}%",
            f"{row['weight_bits']:.2f}",
            f"{row['index_bits']:.2f}" if row["positions_bytes"] else "-",
            _kb(row["values_bytes"]),
            _kb(row["positions_bytes"]),
            _kb(row["codebook_bytes"]),
            _kb(row["stored_bytes"]),
            _kb(row["dense_bytes"]),
            f"{row['compression']:.1f}x",
            style="bold" if row["name"] == "total" else None,
        )
    return Group(summary, table)


def run(args: argparse.Namespace) -> int:
    """Print the inspection of ``args.file`` (a table, or JSON with ``--json``)."""
    if not os.path.isfile(args.file):
        raise CLIError(f"no such file: {args.file}")
    try:
        info = inspect_file(args.file, verify=args.verify)
    except FormatError as exc:
        raise CLIError(str(exc)) from exc
    emit(args, info, render(info))
    return 0
