"""``nnshrink quantize``: quantize or share a model's weights, then print the before/after report.

``--method`` is a technique's kind — ``ptq`` (int8 and below, calibrated), ``qat``,
``weight-sharing``, ``hashing``, ``circulant``, ``binary``, ``ternary``, ``mixed-precision``, and
any other registered config of those families — and every config field is a flag (``--bits``,
``--observer``, ``--backend``, ``--calibration-batches``, ...). Older spellings keep working with
a warning: ``int8`` = ``ptq`` (int8 ONNX Runtime at 8 bits, the ``fake`` simulation below),
``kmeans`` = ``weight-sharing``.

The written file is what the report's bytes are: an int8 model is its ``.onnx`` graph; other
forms are ``.safetensors`` checkpoints or ``.nns`` files (bit-packed where the format allows).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import (
    CLIError,
    add_data_args,
    add_device_args,
    add_json_arg,
    add_measure_args,
    add_model_args,
    add_run_args,
    emit,
    recipe_source,
    report_of,
    run_stages,
    stage_details,
)
from .flags import add_config_flags, build_config, family
from .prune import _warn, finetune_stage

FAMILIES = ("nnshrink.quantization", "nnshrink.sharing", "nnshrink.binary")
LEGACY = {"int8": "ptq", "kmeans": "weight-sharing"}


def register(subparsers) -> None:
    """Add the ``quantize`` subcommand."""
    kinds = sorted(cls.kind for cls in family(*FAMILIES))
    p = subparsers.add_parser(
        "quantize", help="quantize a model (int8 PTQ, QAT, k-means sharing, binary, ternary...)",
        description=__doc__.split("\n\n")[1],
    )  # fmt: skip
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--method", required=True, choices=(*kinds, *LEGACY),
                   help="the technique (config kind)")  # fmt: skip
    p.add_argument("--calibration-batches", type=int, default=None,
                   help="batches observed to calibrate int8 activations (ptq, and qat's int8 "
                   "export)")  # fmt: skip
    add_config_flags(p, family(*FAMILIES))
    p.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning epochs after the technique (qat: 1)")  # fmt: skip
    p.add_argument("--lr", type=float, default=None, help="fine-tuning learning rate")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                   help="fine-tuning optimizer (default: the one the model was trained with)")  # fmt: skip
    add_device_args(p)
    add_measure_args(p)
    add_run_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def _stages(kind: str, config: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    body = {k: v for k, v in config.items() if k != "type"}
    model_path = args.model_opt or args.model_ref
    args.finetune_epochs = args.epochs if args.epochs is not None else (1 if kind == "qat" else 0)
    stages = [
        {kind: body},
        *finetune_stage(args, model_path, lr_scale=0.1),
    ]  # centroids: small steps
    if kind == "qat" and body.get("bits", 8) == 8 and Path(args.out).suffix == ".onnx":
        # int8 deployment of a QAT model: plain layers holding its weights, then int8 kernels
        ptq: dict[str, Any] = {"backend": "onnxruntime"}
        if args.calibration_batches:
            ptq["calibration_batches"] = args.calibration_batches
        stages += [{"finalize": {}}, {"ptq": ptq}]
    return stages


def run(args: argparse.Namespace) -> int:
    """Quantize through a one-stage recipe, measure before and after, write ``--out``."""
    kind = LEGACY.get(args.method, args.method)
    if kind != args.method:
        _warn(f"--method {args.method}", f"--method {kind}")
    base: dict[str, Any] = {}
    if kind == "ptq" and getattr(args, "cfg_backend", None) is None:
        bits = getattr(args, "cfg_bits", None)
        base["backend"] = "fake" if bits is not None and bits != 8 else "onnxruntime"
    from ..core.config import config_types

    if (
        args.calibration_batches
        and "calibration_batches" in config_types()[kind].__dataclass_fields__
    ):
        base["calibration_batches"] = args.calibration_batches
    config = build_config(kind, args, base)
    runtime = kind == "ptq" and config.get("backend") != "fake"
    if runtime and Path(args.out).suffix != ".onnx":
        raise CLIError(f"--out {args.out}: an int8 model runs in ONNX Runtime; write it as .onnx "
                       "(or use --backend fake for a PyTorch simulation)")  # fmt: skip
    stages = _stages(kind, config, args)
    result = run_stages(args, recipe_source(args, stages), args.out)
    details = {"config": config, "method": args.method, "out": args.out,
               "summary": stage_details(result, 0).get("result")}  # fmt: skip
    report = report_of(result, f"nnshrink quantize --method {kind}", details)
    emit(args, report.to_dict(), report.to_rich(), f"saved {args.out}")
    return 0
