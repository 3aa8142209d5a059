"""CPU speed-up of Tucker-2 and CP decompositions at ~2x fewer MACs (VGG-16 and ResNet-20).

Every 3x3 conv except the 3-channel stem is decomposed with ``LowRank(method, rank="macs",
macs_ratio=0.5)`` (largest ranks with at most half the layer's MACs). We time each decomposed
layer against the dense one on its real input, and the whole model, in PyTorch eager (NCHW and
channels_last) and ONNX Runtime (legacy exporter, ``dynamo=False``), at batch 1 and 32.
channels_last matters: in torch 2.13 on CPU, depthwise convs on NCHW tensors at batch > 1 are
~200x slower than on channels_last ones (50 ms vs 0.23 ms for 32x30x32x32), which sinks CP in
NCHW eager. Dense and decomposed
calls are interleaved in rounds in the same process and the pooled median is reported, so load
from other processes hits both alike. Latency does not depend on the weight values, so the
models are untrained and CP uses few ALS iterations (``--cp-iters``).

``--methods cp-fused`` times CP with ``LowRank(cp_fuse_spatial=True)``: the kx1 and 1xk
depthwise convs merged into one kxk depthwise conv (three convs per layer instead of four).
``--methods mixed`` is Tucker-2 with ``cp_fallback=True, cp_fuse_spatial=True``: fused CP on the
convs no Tucker-2 shape makes cheaper (with ``--round-to 16``: ResNet-20's 16-channel first
stage, where CP at rank 16 still cuts MACs 3.5x), both at the same per-layer MAC ratio.

``--round-to 16`` makes every rank a multiple of 16 (``LowRank(round_to=16)``): ONNX Runtime's
blocked NCHWc kernels on this AVX-512 machine take channels in blocks of 16, and odd ranks
(38, 74, 77, ...) fall back to slower kernels. The per-layer MAC ratio is then bisected so that
the decomposed layers together still keep at most ``--macs-ratio`` of their MACs.

Usage:
    python benchmarks/lowrank_latency.py                   # both models, ~10 min on 2 cores
    python benchmarks/lowrank_latency.py --models resnet20 --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

from nnshrink import compress_
from nnshrink.export.onnx import export_onnx
from nnshrink.lowrank import LowRank
from nnshrink.metrics import count_macs
from nnshrink.metrics.latency import interleaved, ort_session
from nnshrink.models import create
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "lowrank_latency.json"


def ort_callable(module: nn.Module, x: torch.Tensor):
    # workers park after each run: sessions take turns here (see ort_session)
    session = ort_session(
        export_onnx(module, (x,)), threads=torch.get_num_threads(), stop_spinning=True
    )
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)


def layer_inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input tensor each named layer sees on ``x``."""
    seen: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output, name):
        seen.setdefault(name, inputs[0].detach().clone())  # returns None: output untouched

    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: hook(m, i, o, n))
        for n in names
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


def compare(dense: nn.Module, low: nn.Module, x: torch.Tensor, rounds: int, runs: int) -> dict:
    """Eager (NCHW and channels_last) and ORT medians of two modules on one input."""
    cl = torch.channels_last
    dense_cl = copy.deepcopy(dense).to(memory_format=cl)
    low_cl = copy.deepcopy(low).to(memory_format=cl)
    x_cl = x.contiguous(memory_format=cl)
    timed = {}
    with torch.inference_mode():
        timed["eager"] = interleaved(
            {"dense": lambda: dense(x), "lowrank": lambda: low(x)}, rounds=rounds, runs=runs
        )
        timed["eager_cl"] = interleaved(
            {"dense": lambda: dense_cl(x_cl), "lowrank": lambda: low_cl(x_cl)},
            rounds=rounds,
            runs=runs,
        )
    timed["ort"] = interleaved(
        {"dense": ort_callable(dense, x), "lowrank": ort_callable(low, x)}, rounds=rounds, runs=runs
    )
    out = {}
    for name, res in timed.items():
        d, lr = res["dense"], res["lowrank"]
        out[name] = {
            "dense_ms": round(d["median"], 4),
            "lowrank_ms": round(lr["median"], 4),
            "speedup": round(d["median"] / lr["median"], 3),
            "dense_p10_ms": round(d["p10"], 4),
            "lowrank_p10_ms": round(lr["p10"], 4),
            "speedup_p10": round(d["p10"] / lr["p10"], 3),
        }
    return out


def not_stem(module: nn.Module, name: str) -> bool:
    return not (isinstance(module, nn.Conv2d) and module.in_channels <= 3)


def decompose_at(dense: nn.Module, method: str, x1: torch.Tensor, args):
    """Decompose a copy with ``rank="macs"``. The per-layer MAC ratio is ``--macs-ratio``, or
    with ``--round-to`` > 1 the largest one (bisection) whose rounded ranks keep the 3x3 convs'
    MACs together at most ``--macs-ratio`` of theirs: rounding ranks to multiples cuts more MACs
    than asked, and the speed-up must be compared at the same MAC cut."""

    def run(ratio: float):
        model = copy.deepcopy(dense)
        # "cp-fused": CP with its kx1 and 1xk depthwise convs merged into one kxk conv;
        # "mixed": Tucker-2, with fused CP where no Tucker-2 shape cuts MACs
        mixed = method == "mixed"
        cfg = LowRank(method="tucker" if mixed else method.removesuffix("-fused"), rank="macs",
                      macs_ratio=ratio, n_iter_max=args.cp_iters, round_to=args.round_to,
                      cp_fuse_spatial=method in ("cp-fused", "mixed"),
                      cp_fallback=mixed)  # fmt: skip
        report = compress_(model, cfg, example_inputs=x1, filter_fn=not_stem)
        before = sum(r.macs_before for r in report.rows if r.macs_before)
        after = sum(r.macs_after for r in report.rows if r.macs_before)
        return model, report, after / before

    if args.round_to == 1:
        return (*run(args.macs_ratio)[:2], args.macs_ratio)
    lo, hi = args.macs_ratio, 1.0
    best = (*run(lo)[:2], lo)
    for _ in range(args.bisect_steps):
        mid = (lo + hi) / 2
        model, report, whole = run(mid)
        if whole <= args.macs_ratio:
            lo, best = mid, (model, report, mid)
        else:
            hi = mid
    return best


def run_model(name: str, method: str, args) -> dict:
    torch.manual_seed(0)
    dense = create(name, in_channels=3, input_size=32).eval()
    x1 = torch.randn(1, 3, 32, 32)
    t0 = time.perf_counter()
    model, report, macs_ratio = decompose_at(dense, method, x1, args)
    decompose_s = time.perf_counter() - t0
    model.eval()
    names = [r.name for r in report.decomposed]
    result = {
        "model": name,
        "method": method,
        "decompose_s": round(decompose_s, 1),
        "round_to": args.round_to,
        "layer_macs_ratio": round(macs_ratio, 4),
        "macs_dense": count_macs(dense, x1),
        "macs_lowrank": count_macs(model, x1),
        "decomposed_macs_before": sum(r.macs_before for r in report.decomposed),
        "decomposed_macs_after": sum(r.macs_after for r in report.decomposed),
        "layers": [],
        "whole": {},
    }
    for batch in args.batches:
        xb = torch.randn(batch, 3, 32, 32)
        inputs = layer_inputs(dense, names, xb)
        sums = {rt: [0.0, 0.0, 0.0, 0.0] for rt in ("eager", "eager_cl", "ort")}
        for row in report.decomposed:
            res = compare(dense.get_submodule(row.name), model.get_submodule(row.name),
                          inputs[row.name], args.rounds, args.runs)  # fmt: skip
            for rt in sums:
                for i, key in enumerate(("dense_ms", "lowrank_ms", "dense_p10_ms",
                                         "lowrank_p10_ms")):  # fmt: skip
                    sums[rt][i] += res[rt][key]
            result["layers"].append({
                "name": row.name, "batch": batch, "ranks": list(row.ranks),
                "mac_ratio": round(row.macs_after / row.macs_before, 3), **res,
            })  # fmt: skip
            print(
                f"{name} {method} b{batch} {row.name} ranks={row.ranks} "
                f"eager x{res['eager']['speedup']} (p10 x{res['eager']['speedup_p10']}) "
                f"eager-CL x{res['eager_cl']['speedup']} "
                f"ort x{res['ort']['speedup']} (p10 x{res['ort']['speedup_p10']})",
                flush=True,
            )
        whole = compare(dense, model, xb, args.rounds, args.runs)
        # speed-up of the decomposed layers together (sum of their times, dense / low-rank)
        whole["decomposed_layers_sum"] = {
            rt: {"speedup": round(s[0] / s[1], 3), "speedup_p10": round(s[2] / s[3], 3)}
            for rt, s in sums.items()
        }
        result["whole"][f"batch{batch}"] = whole
        print(f"{name} {method} b{batch} WHOLE {whole}", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "vgg16"])
    p.add_argument("--methods", nargs="+", default=["tucker", "cp"],
                   choices=("tucker", "cp", "cp-fused", "mixed"))  # fmt: skip
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", type=int, default=2, help="intra-op threads (torch and ORT)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=3, help="timed calls per round and variant")
    p.add_argument("--cp-iters", type=int, default=3, help="ALS iterations (latency only)")
    p.add_argument("--macs-ratio", type=float, default=0.5, help="MACs kept per decomposed layer")
    p.add_argument("--round-to", type=int, default=1, help="ranks in multiples of this")
    p.add_argument("--bisect-steps", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "benchmark": "lowrank_latency",
        "threads": args.threads,
        "rounds": args.rounds,
        "runs_per_round": args.runs,
        "torch": torch.__version__,
        "machine": environment(),
        "runs": [],
    }
    t0 = time.time()
    for name in args.models:
        for method in args.methods:
            results["runs"].append(run_model(name, method, args))
            results["wall_s"] = round(time.time() - t0, 1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
