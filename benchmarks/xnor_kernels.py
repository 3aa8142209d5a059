"""XNOR + popcount kernels against fp32 convolutions in eager PyTorch (batch 1, 2 threads).

Measured in one run, interleaved: for each round, every variant runs ``--runs`` times and its
median is kept; the JSON reports the median over rounds and the range (min..max) of the per-round
medians and speed-ups, since the machine is shared.

1. ``conv3x3_256``: a 3x3 convolution, 256 -> 256 channels, 28x28, padding 1, batch 1.
   ``fp32``: ``nn.Conv2d`` eval forward (no grad) on a contiguous NCHW input (oneDNN), and on a
   channels-last input; ``xnor``: the deployed XNOR layer (``PackedXNORConv2d``, eval forward:
   input affine (folded batch norm), the activation scale ``K``, sign packing, the XNOR +
   popcount kernel and the output scaling); ``xnor_noK`` the same without ``K``; ``kernel``
   :func:`~nnshrink.binary.xnor.xnor_conv2d` alone (pack + popcount + int->float); the portable C
   path and the PyTorch fallback for scale. ``max_abs_diff``: the XNOR layer against the float64
   oracle (``sign(u) (*) sign(W)`` times ``K``, ``alpha``, plus bias).
2. ``shapes``: the same comparison for other layer shapes (ResNet-20's, wider ones).
3. ``resnet20``: whole-model eval latency of ResNet-20 (1x28x28 input, Fashion-MNIST shape) in
   float and as XNOR-Net (every conv but the first binarized, ``ns.finalize``d), at batch 1 and
   32, with a per-layer table (each conv timed alone on its recorded input).

Run: ``flock /tmp/nnshrink-timing.lock env PYTHONPATH=. .venv/bin/python
benchmarks/xnor_kernels.py``. Writes ``benchmarks/results/xnor_kernels.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import nnshrink as ns
from nnshrink.binary import BinaryWeights, PackedXNORConv2d, XNORConv2d, xnor_backend
from nnshrink.binary._build import build_status, kernel_library
from nnshrink.binary.ops import activation_scale
from nnshrink.binary.xnor import PackedWeights, xnor_conv2d, xnor_conv2d_reference
from nnshrink.core import forward_with_hooks
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"
SHAPES = [  # (channels in, channels out, side, stride)
    (16, 16, 28, 1),
    (32, 32, 14, 1),
    (64, 64, 7, 1),
    (64, 64, 28, 1),
    (128, 128, 14, 1),
    (256, 256, 14, 1),
    (512, 512, 7, 1),
]


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def interleaved(variants: dict[str, Callable[[], object]], rounds: int, runs: int) -> dict:
    """Per-round medians of every variant, rounds interleaved; summary over rounds."""
    for fn in variants.values():  # warm-up: caches, packed weights, oneDNN primitives
        for _ in range(3):
            fn()
    per_round: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            per_round[name].append(_median_ms(fn, runs))
    return per_round


def _summary(per_round: dict[str, list[float]], base: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, values in per_round.items():
        out[f"{name}_ms"] = statistics.median(values)
        out[f"{name}_ms_range"] = [min(values), max(values)]
        if name != base:
            ratios = [b / v for b, v in zip(per_round[base], values)]
            out[f"speedup_{name}"] = statistics.median(ratios)
            out[f"speedup_{name}_range"] = [min(ratios), max(ratios)]
    return out


def _xnor_layer(cin: int, cout: int, stride: int, scale_activations: bool = True) -> nn.Module:
    """A deployed XNOR conv with a trained-looking input batch norm (random statistics)."""
    layer = XNORConv2d(cin, cout, 3, stride, 1, bias=False, scale_activations=scale_activations)
    with torch.no_grad():
        norm = layer.input_norm
        norm.running_mean.normal_(0, 0.3)
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_(0, 0.2)
    return PackedXNORConv2d.from_layer(layer.eval()).eval()


def conv_case(cin: int, cout: int, side: int, stride: int, args, extra: bool) -> dict:
    torch.manual_seed(0)
    x = torch.randn(1, cin, side, side)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fp32 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False).eval()
    xnor = _xnor_layer(cin, cout, stride)
    with torch.no_grad():
        y = xnor(x)
        u = x * xnor.in_scale.view(1, -1, 1, 1) + xnor.in_shift.view(1, -1, 1, 1)
        k = activation_scale(u, (3, 3), (stride, stride), (1, 1))
        signs = xnor.dequantized_weight()
        ref = xnor_conv2d_reference(u, signs, stride=stride, padding=1, k=k, alpha=xnor.alpha)
    variants: dict[str, Callable[[], object]] = {
        "fp32": lambda: fp32(x),
        "fp32_channels_last": lambda: fp32(x_cl),
        "xnor": lambda: xnor(x),
    }
    if extra:
        no_k = _xnor_layer(cin, cout, stride, scale_activations=False)
        packed = PackedWeights.from_weight(signs)
        variants["xnor_noK"] = lambda: no_k(x)
        variants["kernel"] = lambda: xnor_conv2d(x, packed, stride=stride, padding=1)
        if xnor_backend() != "torch":
            variants["kernel_portable"] = lambda: xnor_conv2d(
                x, packed, stride=stride, padding=1, backend="portable"
            )
        variants["torch_fallback"] = lambda: xnor_conv2d(
            x, packed, stride=stride, padding=1, backend="torch"
        )
    with torch.no_grad():
        per_round = interleaved(variants, args.rounds, args.runs)
    out = {
        "shape": {"in": cin, "out": cout, "side": side, "stride": stride, "kernel": 3, "batch": 1},
        "threads": torch.get_num_threads(),
        "backend": xnor_backend(),
        "max_abs_diff": float((y - ref).abs().max()),
        "per_round_ms": per_round,
        **_summary(per_round, "fp32"),
    }
    out["speedup"] = out["speedup_xnor"]
    return out


def _conv_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs of every conv-like layer in one forward pass."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, inputs, output) -> None:  # returns None: the output stays as it is
            seen.setdefault(name, inputs[0])

        return hook

    hooks = [
        m.register_forward_hook(keep(name))
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | PackedXNORConv2d)
    ]
    forward_with_hooks(model, x, hooks)  # eval mode, no grad, hooks removed even on error
    return seen


def resnet20(args) -> dict:
    torch.manual_seed(0)
    float_model = ns.models.create("resnet20", in_channels=1).eval()
    xnor_model = copy.deepcopy(float_model)
    ns.compress_(xnor_model, BinaryWeights(mode="xnor", activations=True))
    ns.finalize(xnor_model)
    xnor_model.eval()
    out: dict[str, object] = {"binary_layers": [], "batches": {}}
    out["binary_layers"] = [
        n for n, m in xnor_model.named_modules() if isinstance(m, PackedXNORConv2d)
    ]
    for batch in (1, 32):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            per_round = interleaved(
                {"fp32": lambda x=x: float_model(x), "xnor": lambda x=x: xnor_model(x)},
                args.rounds,
                max(3, args.runs // (4 if batch > 1 else 1)),
            )
        entry = {"per_round_ms": per_round, **_summary(per_round, "fp32")}
        inputs_f, inputs_x = _conv_inputs(float_model, x), _conv_inputs(xnor_model, x)
        layers = []
        for name, inp in inputs_f.items():
            fmod, xmod = float_model.get_submodule(name), xnor_model.get_submodule(name)
            with torch.no_grad():
                rounds = interleaved(
                    {"fp32": lambda fmod=fmod, inp=inp: fmod(inp),
                     "xnor": lambda xmod=xmod, inp=inputs_x[name]: xmod(inp)},
                    max(2, args.rounds // 2), max(3, args.runs // 2),
                )  # fmt: skip
            layers.append({
                "name": name,
                "binary": isinstance(xmod, PackedXNORConv2d),
                "in": tuple(inp.shape),
                "fp32_ms": statistics.median(rounds["fp32"]),
                "xnor_ms": statistics.median(rounds["xnor"]),
            })  # fmt: skip
        entry["layers"] = layers
        entry["conv_fp32_ms_sum"] = sum(r["fp32_ms"] for r in layers)
        entry["conv_xnor_ms_sum"] = sum(r["xnor_ms"] for r in layers)
        out["batches"][str(batch)] = entry
        print(f"resnet20 b{batch}: fp32 {entry['fp32_ms']:.2f} ms, xnor {entry['xnor_ms']:.2f} "
              f"ms, speedup {entry['speedup_xnor']:.2f}x")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--skip-model", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "xnor_kernels.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lib = kernel_library()
    result: dict[str, object] = {
        "benchmark": "xnor_kernels",
        "environment": environment(0),
        "kernel": {
            "backend": xnor_backend(),
            "build": build_status(),
            "avx512_vpopcntdq": bool(lib and lib.avx512),
            "openmp": bool(lib and lib.openmp),
        },
        "protocol": (
            f"eager PyTorch, batch 1, {args.threads} threads, no grad; {args.rounds} interleaved "
            f"rounds x {args.runs} runs, median per round, median (range) over rounds; run "
            "inside flock /tmp/nnshrink-timing.lock on a shared machine"
        ),
        "goal": "conv3x3_256: xnor >= 3x faster than fp32 (speedup = fp32_ms / xnor_ms)",
    }
    result["conv3x3_256"] = conv_case(256, 256, 28, 1, args, extra=True)
    c = result["conv3x3_256"]
    print(f"conv3x3_256: fp32 {c['fp32_ms']:.3f} ms, xnor {c['xnor_ms']:.3f} ms, speedup "
          f"{c['speedup']:.1f}x (range {c['speedup_xnor_range'][0]:.1f}-"
          f"{c['speedup_xnor_range'][1]:.1f}), max_abs_diff {c['max_abs_diff']}")  # fmt: skip
    result["shapes"] = []
    for cin, cout, side, stride in SHAPES:
        case = conv_case(cin, cout, side, stride, args, extra=False)
        result["shapes"].append(case)
        print(f"{cin}->{cout} @{side}: fp32 {case['fp32_ms']:.3f} ms, xnor {case['xnor_ms']:.3f} "
              f"ms, {case['speedup']:.1f}x")  # fmt: skip
    if not args.skip_model:
        result["resnet20"] = resnet20(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
