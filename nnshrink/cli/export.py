"""``nnshrink export``: a checkpoint to ONNX, checked against PyTorch in ONNX Runtime."""

from __future__ import annotations

import argparse

import torch

from .common import CLIError, add_json_arg, emit, load_model_arg


def register(subparsers) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser("export", help="export a model file to ONNX")
    p.add_argument("checkpoint", help="checkpoint (.safetensors) or .nns file")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--input-shape", default=None, help="N,C,H,W (default from the model spec)")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then run the file in ONNX Runtime and compare with PyTorch."""
    from ..export import export_onnx
    from ..metrics import ort_session

    model, info = load_model_arg(args.checkpoint)
    if args.input_shape:
        shape = tuple(int(v) for v in args.input_shape.split(","))
    else:
        kwargs = (info.get("spec") or {}).get("kwargs", {})
        shape = (1, kwargs.get("in_channels", 1), kwargs.get("input_size", 28),
                 kwargs.get("input_size", 28))  # fmt: skip
    x = torch.randn(*shape)
    try:
        data = export_onnx(model, x, args.out)
    except Exception as exc:
        raise CLIError(f"export failed: {exc}") from None
    session = ort_session(data, threads=1)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    model.eval()
    with torch.no_grad():
        diff = float((torch.from_numpy(out) - model(x)).abs().max())
    payload = {"out": args.out, "bytes": len(data), "max_abs_diff_vs_pytorch": diff}
    emit(args, payload, f"wrote {args.out} ({len(data):,} bytes); max |ORT - PyTorch| = {diff:.2e}")
    return 0
