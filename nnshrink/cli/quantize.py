"""``nnshrink quantize``: quantize a model and print the before/after report.

Methods:

* ``int8``: post-training quantization (``PTQ``), calibrated on ``--calibration-batches``
  training batches; ``--backend onnxruntime`` (default) writes an int8 QDQ ``.onnx``,
  ``torch-fx`` / ``fake`` write a pickled module (``torch.load(path, weights_only=False)``);
* ``qat``: quantization-aware fine-tuning for ``--epochs``, then int8 ONNX (8 bits) or frozen
  fake-quant layers (fewer bits);
* ``kmeans``, ``binary``, ``ternary``: weight sharing / binary / ternary weights (configs
  ``weight-sharing``, ``binary``, ``ternary``), optionally fine-tuned, saved as a checkpoint.
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from torch import nn

from .common import (
    CLIError,
    add_data_args,
    add_json_arg,
    data_loaders,
    emit,
    example_input,
    load_model_arg,
    model_kwargs_for_data,
)

METHODS = ("kmeans", "int8", "qat", "binary", "ternary")
_OTHER_KINDS = {"kmeans": "weight-sharing", "binary": "binary", "ternary": "ternary"}


def register(subparsers) -> None:
    """Add the ``quantize`` subcommand."""
    p = subparsers.add_parser("quantize", help="quantize a model (int8, QAT, k-means, binary...)")
    p.add_argument("checkpoint", help="checkpoint file or zoo model name")
    add_data_args(p)
    p.add_argument("--method", required=True, choices=METHODS, help="quantization method")
    p.add_argument("--bits", type=int, default=None, help="bit width (int8/qat: 8; kmeans: 5)")
    p.add_argument(
        "--observer",
        default="minmax",
        choices=("minmax", "moving_average", "percentile", "mse", "kl"),
        help="activation calibration (int8)",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=("fake", "onnxruntime", "torch-fx"),
        help="int8 execution backend (default onnxruntime; fake below 8 bits)",
    )
    p.add_argument("--calibration-batches", type=int, default=8, help="int8 calibration batches")
    p.add_argument("--lsq", action="store_true", help="qat: learned step size (LSQ)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (qat: 1)")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--latency-threads", type=int, default=2, help="threads for latency")
    p.add_argument("--runs", type=int, default=30, help="timed runs for latency")
    add_json_arg(p)
    p.set_defaults(func=run)


def _measure(model: nn.Module, x: torch.Tensor, loader, args, size_bytes: int) -> dict[str, Any]:
    from ..metrics import measure_latency
    from ..train import evaluate

    out: dict[str, Any] = {"size_bytes": int(size_bytes)}
    out["latency_ms"] = measure_latency(
        model, x, runtime="eager", threads=args.latency_threads, runs=args.runs
    ).median_ms
    out.update({k: v for k, v in evaluate(model, loader).items() if k in ("top1", "top5", "loss")})
    return out


def _calibration(train, n: int) -> list[torch.Tensor]:
    from ..quantization.ptq import iter_inputs

    return iter_inputs(train, n)


def _int8(model, args, train, bits: int) -> tuple[nn.Module, int, dict[str, Any]]:
    from ..quantization.ptq import PTQ, quantize_ptq

    backend = args.backend or ("onnxruntime" if bits == 8 else "fake")
    cfg = PTQ(
        bits=bits,
        observer=args.observer,
        backend=backend,
        calibration_batches=args.calibration_batches,
    )
    result = quantize_ptq(model, cfg, _calibration(train, args.calibration_batches))
    return result.model, _save_quantized(result.model, args.out), {"config": cfg.to_dict()}


def _save_quantized(model: nn.Module, path: str) -> int:
    from ..metrics.size import file_bytes
    from ..quantization.backends.ort import OrtInt8Module

    if isinstance(model, OrtInt8Module):
        model.save(path)
    else:
        torch.save(model, path)
    return file_bytes(path)


def _finetune(model: nn.Module, train, epochs: int, lr: float) -> None:
    if epochs > 0:
        from ..train import fit

        fit(model, train, epochs=epochs, lr=lr, progress=False)


def _qat(model, args, train, bits: int) -> tuple[nn.Module, int, dict[str, Any]]:
    from ..quantization.ptq import PTQ, quantize_ptq
    from ..quantization.qat import QAT, convert_qat, prepare_qat, strip_qat

    cfg = QAT(bits=bits, lsq=args.lsq)
    prepare_qat(model, cfg)
    _finetune(model, train, 1 if args.epochs is None else args.epochs, args.lr)
    model.eval()
    backend = args.backend or ("onnxruntime" if bits == 8 else "fake")
    if backend == "fake":
        convert_qat(model)
        return model, _save_quantized(model, args.out), {"config": cfg.to_dict()}
    if bits != 8:
        raise CLIError(f"--backend {backend} runs int8 kernels; use --bits 8 or --backend fake")
    strip_qat(model)
    ptq = PTQ(backend=backend, observer=args.observer, calibration_batches=args.calibration_batches)
    qmodel = quantize_ptq(model, ptq, _calibration(train, args.calibration_batches)).model
    details = {"config": cfg.to_dict(), "int8": ptq.to_dict()}
    return qmodel, _save_quantized(qmodel, args.out), details


def _other(model, args, train, method: str) -> tuple[nn.Module, int, dict[str, Any]]:
    from ..core import Config, ConfigError, compress_, config_types
    from ..io import save_checkpoint
    from ..metrics.size import file_bytes

    kind = _OTHER_KINDS[method]
    try:
        import nnshrink.quantization  # noqa: F401  (registers the configs that exist)
    except ImportError:
        pass
    if kind not in config_types():
        raise CLIError(f"--method {method} needs the {kind!r} config, which is not installed")
    spec: dict[str, Any] = {"type": kind}
    if args.bits is not None:
        if method != "kmeans":
            raise CLIError(f"--bits does not apply to --method {method}")
        spec["bits"] = args.bits
    try:
        cfg = Config.from_dict(spec)
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    result = compress_(model, cfg, example_inputs=_calibration(train, 1)[0]).summary
    _finetune(model, train, args.epochs or 0, args.lr)
    model.eval()
    save_checkpoint(model, args.out)
    rows = result if isinstance(result, list) else []
    details = {"config": cfg.to_dict(), "layers": len(rows), "file_bytes": file_bytes(args.out)}
    return model, packed_bytes(model), details


def packed_bytes(model: nn.Module) -> int:
    """Storage the weights need once low-bit layers are packed (the checkpoint keeps floats).

    Binary / ternary layers count their bit-packed codes plus scales; k-means layers count
    ``bits`` per index plus the float32 codebook (and one bit per weight for a pruning mask);
    every other parameter and float buffer counts 4 bytes.
    """
    packed: dict[str, int] = {}
    try:
        from ..binary.layers import pack_low_bit

        packed.update({name: p.nbytes for name, p in pack_low_bit(model).items()})
    except ImportError:
        pass
    for name, m in model.named_modules():
        codebook, indices = getattr(m, "codebook", None), getattr(m, "indices", None)
        if isinstance(codebook, torch.Tensor) and isinstance(indices, torch.Tensor):
            size = -(-indices.numel() * int(m.bits) // 8) + codebook.numel() * 4
            mask = getattr(m, "mask", None)
            if isinstance(mask, torch.Tensor) and not bool(mask.all()):
                size += -(-mask.numel() // 8)
            packed[name] = size
    total = sum(packed.values())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        owner = name.rpartition(".")[0]
        if owner in packed or not tensor.is_floating_point():
            continue
        total += tensor.numel() * 4
    return total


def run(args: argparse.Namespace) -> int:
    """Quantize, measure before and after, save to ``--out``."""
    from ..metrics import Report
    from ..metrics.size import dense_bytes

    if args.method in ("int8", "qat") and args.bits is not None and not 2 <= args.bits <= 8:
        raise CLIError(f"--bits must be in [2, 8] for --method {args.method}, got {args.bits}")
    model, _ = load_model_arg(args.checkpoint, **model_kwargs_for_data(args.data))
    model.eval()
    train, test = data_loaders(args)
    x = example_input(args)
    try:
        before = _measure(model, x, test, args, dense_bytes(model))
    except RuntimeError as exc:
        raise CLIError(f"{args.checkpoint} does not run on {args.data} inputs: {exc}") from None
    bits = args.bits or 8
    work = copy.deepcopy(model)
    if args.method == "int8":
        qmodel, size, details = _int8(work, args, train, bits)
    elif args.method == "qat":
        qmodel, size, details = _qat(work, args, train, bits)
    else:
        qmodel, size, details = _other(work, args, train, args.method)
    after = _measure(qmodel, x, test, args, size)
    details.update(method=args.method, out=args.out)
    report = Report(
        before, after, title=f"nnshrink quantize --method {args.method}", details=details
    )
    emit(args, {**report.to_dict(), "details": details}, report.to_rich())
    return 0
