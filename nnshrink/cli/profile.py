"""``nnshrink profile``: params, MACs, size, measured latency and a per-layer table."""

from __future__ import annotations

import argparse

import torch

from .common import CLIError, add_json_arg, emit, load_model_arg


def register(subparsers) -> None:
    """Add the ``profile`` subcommand."""
    p = subparsers.add_parser(
        "profile",
        help="parameters, MACs, size and measured latency of a model",
        description="Profile a zoo model (--model NAME) or a checkpoint (CKPT).",
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint file (or use --model)")
    p.add_argument("--model", help="zoo model name, e.g. lenet300")
    p.add_argument(
        "--input-shape", default=None, help="input shape N,C,H,W (default 1,1,28,28 or from spec)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="override N of --input-shape")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--runs", type=int, default=50, help="timed runs per runtime")
    p.add_argument("--threads", type=int, default=2, help="threads for latency (default 2)")
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    p.add_argument("--no-onnx", action="store_true", help="time eager PyTorch only")
    add_json_arg(p)
    p.set_defaults(func=run)


def _input_shape(args: argparse.Namespace, spec: dict | None) -> tuple[int, ...]:
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise CLIError(
                f"--input-shape must be N,C,H,W integers, got {args.input_shape!r}"
            ) from None
        if len(shape) < 2:
            raise CLIError("--input-shape needs at least N,features")
    else:
        kwargs = (spec or {}).get("kwargs", {})
        c, s = kwargs.get("in_channels", 1), kwargs.get("input_size", 28)
        shape = (1, c, s, s)
    if args.batch_size:
        shape = (args.batch_size, *shape[1:])
    return shape


def run(args: argparse.Namespace) -> int:
    """Profile and print (or emit JSON)."""
    from rich.table import Table

    from ..metrics import profile_macs, snapshot

    if bool(args.checkpoint) == bool(args.model):
        raise CLIError("give either a checkpoint file or --model NAME")
    create_kwargs: dict = {"num_classes": args.num_classes}
    if args.model and args.input_shape:
        shape = _input_shape(args, None)
        if len(shape) == 4:
            create_kwargs.update(in_channels=shape[1], input_size=shape[2])
    model, info = load_model_arg(args.checkpoint or args.model, **create_kwargs)
    shape = _input_shape(args, info.get("spec"))
    x = torch.zeros(*shape)
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
