"""``nnshrink profile``: params, MACs, size, measured latency and a per-layer table."""

from __future__ import annotations

import argparse

import torch

from .common import (
    CLIError,
    add_data_args,
    add_json_arg,
    add_model_args,
    emit,
    load_model,
    open_data_args,
)


def register(subparsers) -> None:
    """Add the ``profile`` subcommand."""
    p = subparsers.add_parser(
        "profile",
        help="parameters, MACs, size and measured latency of a model",
        description="Profile a model: a file (CKPT), a zoo name, your factory or hf:DIR.",
    )
    add_model_args(p)
    p.add_argument(
        "--input-shape", default=None,
        help="input shape N,C,H,W (default: the first batch of --data, the zoo spec, or 1,1,28,28)",
    )  # fmt: skip
    add_data_args(p, required=False)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--runs", type=int, default=50, help="timed runs per runtime")
    p.add_argument("--threads", type=int, default=2, help="threads for latency (default 2)")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    p.add_argument("--no-onnx", action="store_true", help="time eager PyTorch only")
    add_json_arg(p)
    p.set_defaults(func=run, batch_size=None)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise CLIError(f"--input-shape must be N,C,H,W integers, got {text!r}") from None
    if len(shape) < 2:
        raise CLIError("--input-shape needs at least N,features")
    return shape


def _input(args: argparse.Namespace, model, data) -> torch.Tensor:
    """Zeros of --input-shape, else real samples of --data, else the zoo spec's shape."""
    batch = args.batch_size
    if args.input_shape:
        shape = _parse_shape(args.input_shape)
        return torch.zeros(batch or shape[0], *shape[1:])
    if data is not None:
        x = data.example_inputs()
        return x[: batch or 1]
    kwargs = (getattr(model, "nnshrink_spec", None) or {}).get("kwargs", {})
    c, s = kwargs.get("in_channels", 1), kwargs.get("input_size", 28)
    return torch.zeros(batch or 1, c, s, s)


def run(args: argparse.Namespace) -> int:
    """Profile and print (or emit JSON)."""
    from rich.table import Table

    from ..data import DataBundle
    from ..metrics import profile_macs, snapshot

    if bool(args.model_ref) == bool(args.model_opt):
        raise CLIError("give either a model file or --model NAME (zoo name, factory, hf:DIR)")
    data = open_data_args(args) if (args.data or args.data_dir) else None
    shape_hint = data
    if data is None and args.input_shape:
        shape = _parse_shape(args.input_shape)
        if len(shape) == 4:  # zoo models adapt to the input shape
            shape_hint = DataBundle([(torch.zeros(*shape), torch.zeros(shape[0]))], None)
    from ..models import list_models

    if args.model_opt in list_models() and not args.model_kwargs:
        args.model_kwargs = {"num_classes": args.num_classes}
    model, _ = load_model(args, data=shape_hint)
    x = _input(args, model, data)
    shape = tuple(x.shape)
    runtimes = ("eager",) if args.no_onnx else ("eager", "onnxruntime")
    try:
        stats = snapshot(
            model,
            x,
            latency=not args.no_latency,
            runtimes=runtimes,
            runs=args.runs,
            threads=args.threads,
        )
        layers = profile_macs(model, x)
    except RuntimeError as exc:
        raise CLIError(f"the model does not run on input shape {shape}: {exc}") from None
    payload = {
        **stats,
        "input_shape": list(shape),
        "layers": [
            {
                "name": r.name,
                "type": r.type,
                "macs": r.macs // shape[0],
                "params": r.params,
                "output_shape": list(r.output_shape),
            }
            for r in layers
        ],  # fmt: skip
        "note": "MACs count conv and linear multiply-adds per sample; FLOPs = 2 x MACs",
    }
    table = Table(title=f"layers (input {tuple(shape)})")
    for col in ("layer", "type", "output shape", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for row in payload["layers"]:
        table.add_row(row["name"], row["type"], str(tuple(row["output_shape"])),
                      f"{row['params']:,}", f"{row['macs']:,}")  # fmt: skip
    summary = Table(title="profile")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("parameters", f"{stats['params']:,}")
    summary.add_row("non-zero parameters", f"{stats['nonzero_params']:,}")
    summary.add_row("MACs / sample (FLOPs = 2 x MACs)", f"{stats['macs']:,}")
    summary.add_row("size, dense fp32 (bytes)", f"{stats['size_bytes']:,}")
    if "latency_ms" in stats:
        summary.add_row(f"latency eager, batch {shape[0]} (ms)", f"{stats['latency_ms']:.3f}")
    if stats.get("latency_onnx_ms") is not None:
        summary.add_row(f"latency ONNX Runtime, batch {shape[0]} (ms)",
                        f"{stats['latency_onnx_ms']:.3f}")  # fmt: skip
    emit(args, payload, table, summary)
    return 0
