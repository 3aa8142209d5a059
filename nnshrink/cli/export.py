"""``nnshrink export``: a model to ONNX, checked against PyTorch in ONNX Runtime.

Training-time forms (masks, shared codebooks, binary latents, hashed and circulant layers) are
exported in their final form (:func:`nnshrink.export.deployable_copy`).
"""

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
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser("export", help="export a model to ONNX")
    add_model_args(p)
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--input-shape", default=None,
                   help="N,C,H,W (default: a batch of --data, or the model spec's shape)")  # fmt: skip
    add_data_args(p, required=False)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then run the file in ONNX Runtime and compare with PyTorch."""
    from ..export import deployable_copy, export_onnx
    from ..metrics import ort_session

    data = open_data_args(args) if (args.data or args.data_dir) else None
    model, _ = load_model(args, data=data)
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            raise CLIError(
                f"--input-shape must be integers N,C,H,W, got {args.input_shape!r}"
            ) from None
        x = torch.randn(*shape)
    elif data is not None:
        x = data.example_inputs()[:2]
    else:
        kwargs = (getattr(model, "nnshrink_spec", None) or {}).get("kwargs", {})
        size = kwargs.get("input_size", 28)
        x = torch.randn(1, kwargs.get("in_channels", 1), size, size)
    try:
        blob = export_onnx(model, x, args.out)
    except Exception as exc:
        raise CLIError(f"export failed: {exc}") from None
    session = ort_session(blob, threads=1)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})[:1]
    reference = deployable_copy(model).eval()
    with torch.no_grad():
        diff = float((torch.from_numpy(out) - reference(x)).abs().max())
    payload = {"out": args.out, "bytes": len(blob), "max_abs_diff_vs_pytorch": diff}
    emit(args, payload, f"wrote {args.out} ({len(blob):,} bytes); max |ORT - PyTorch| = {diff:.2e}")
    return 0
