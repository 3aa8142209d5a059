"""``nnshrink eval``: the metric (default top-1/top-5/loss) of a model on data."""

from __future__ import annotations

import argparse

from .common import (
    add_data_args,
    add_device_args,
    add_json_arg,
    add_model_args,
    emit,
    recipe_source,
    run_stages,
)


def register(subparsers) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser("eval", help="accuracy (or your metric) of a model on data")
    add_model_args(p)
    add_data_args(p)
    add_device_args(p)
    add_json_arg(p)
    p.set_defaults(func=run, no_latency=True)


def run(args: argparse.Namespace) -> int:
    """Evaluate on the test split (the runner measures the model; nothing is written)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nnshrink-eval-") as tmp:
        args.run_dir = tmp
        result = run_stages(args, recipe_source(args, [{"evaluate": {}}]), None)
    row = result.rows[0]
    keys = ["top1", "top5", "loss", "samples"] if result.task.is_classification else []
    skip = {"label", "stage", "params", "nonzero_params", "macs", "dense_bytes", "size_bytes",
            "size_kind", "file_bytes", "checkpoint", "compression", "mac_reduction", "speedup",
            "speedup_onnx", "latency_ms", "latency_onnx_ms"}  # fmt: skip
    payload = {k: row[k] for k in keys if k in row} if keys else {
        k: v for k, v in row.items() if k not in skip and not k.endswith("_change")}  # fmt: skip
    text = "  ".join(f"{k} {100 * v:.2f}%" if k in ("top1", "top5") else f"{k} {v:.4g}"
                     for k, v in payload.items() if isinstance(v, float))  # fmt: skip
    emit(
        args, payload, text + (f"  ({payload['samples']} samples)" if "samples" in payload else "")
    )
    return 0
