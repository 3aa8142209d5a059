"""GPU speed-ups of the compression families, measured on the GPU beside the CPU, in one run.

Why this experiment: a MAC cut is not a speed-up on a GPU (Torch-Pruning#382: FLOPs down, FPS
worse), and on a GPU the cheap wins are precision (fp16/bf16) and ``torch.compile``. Each row
times a dense model and its compressed form on the same device, interleaved in shuffled order,
every call synchronized (``nnshrink.metrics.latency.forward_call``), medians:

* ``structured-resnet56``: ResNet-56 (1x28x28), channels pruned to <= 0.5x MACs, counts in
  multiples of 16;
* ``structured-vit``: the zoo ViT (when this build has it), heads + MLP at <= 0.5x MACs;
* ``lowrank-resnet56``: Tucker-2 with CP fallback at 0.5x MACs, ranks in multiples of 16;
* ``fp16`` / ``bf16`` / ``compile``: the dense ResNet-56 in half precision / compiled;
* ``int8``: int8 kernels are CPU runtimes here (ONNX Runtime, torch.ao); the row is CPU only.

Weights are random (latency does not depend on them), inputs synthetic, so the script needs only
the project's files: it runs where a GPU is lent, with its own Python and torch. Batches 1 and
256. Writes ``benchmarks/results/gpu_speedups.json`` with ``"device"`` (the CUDA device name) and
``"rows"`` of ``{"method", "device", "batch", "dense_ms", "compressed_ms", "speedup"}``.

    PYTHONPATH=. python benchmarks/gpu_speedups.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import nnshrink as ns
from nnshrink.metrics import count_macs
from nnshrink.metrics.latency import forward_call, interleaved, torch_threads
from nnshrink.utils import environment
from nnshrink.utils.device import resolve_device

RESULTS = Path(__file__).parent / "results"


def _structured(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    pruned = copy.deepcopy(model)
    target = count_macs(model, x[:1]) // 2
    cfg = ns.StructuredPruning(target_macs=target, round_to=16)
    ns.compress_(pruned, cfg, example_inputs=x[:1])
    return pruned


def _lowrank(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    factored = copy.deepcopy(model)
    cfg = ns.LowRank(method="tucker", rank="macs", macs_ratio=0.5, round_to=16, cp_fallback=True,
                     cp_fuse_spatial=True, n_iter_max=5)  # fmt: skip
    ns.compress_(factored, cfg, example_inputs=x[:1])
    return factored


def variants(quick: bool) -> dict[str, tuple[torch.nn.Module, torch.nn.Module, str]]:
    """``{method: (dense, compressed, runtime)}`` built on the CPU."""
    torch.manual_seed(0)
    x = torch.randn(2, 1, 28, 28)
    resnet = ns.models.create("resnet20" if quick else "resnet56", in_channels=1).eval()
    out = {
        "structured-resnet56": (resnet, _structured(resnet, x), "eager"),
        "lowrank-resnet56": (resnet, _lowrank(resnet, x), "eager"),
        "fp16": (resnet, resnet, "eager-fp16"),
        "bf16": (resnet, resnet, "eager-bf16"),
    }
    if "vit" in ns.models.list_models():
        vit = ns.models.create("vit", in_channels=1).eval()
        out["structured-vit"] = (vit, _structured(vit, x), "eager")
    out["compile"] = (resnet, resnet, "compile")  # last: compiling is the slowest row to build
    return out


def time_pair(dense, compressed, runtime: str, device: torch.device, batch: int, args) -> dict:
    """Dense (eager) vs compressed (``runtime``) on ``device`` at ``batch``, interleaved."""
    x = torch.randn(batch, 1, 28, 28, device=device)
    dense = copy.deepcopy(dense).to(device).eval()
    compressed = copy.deepcopy(compressed).to(device).eval()
    calls = {
        "dense": forward_call(dense, x, runtime="eager"),
        "compressed": forward_call(compressed, x, runtime=runtime),
    }
    with torch_threads(args.threads):
        stats = interleaved(calls, rounds=args.rounds, runs=args.runs, warmup=args.warmup)
    d, c = stats["dense"]["median"], stats["compressed"]["median"]
    return {"dense_ms": round(d, 4), "compressed_ms": round(c, 4), "speedup": round(d / c, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N")
    p.add_argument("--batches", default="1,256")
    p.add_argument(
        "--cpu-batches", default=None, help="batches of the CPU rows (default --batches)"
    )
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the CPU rows")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="ResNet-20, batch 1 and 8, few runs")
    p.add_argument("--out", default=str(RESULTS / "gpu_speedups.json"))
    args = p.parse_args()
    if args.quick:
        args.batches, args.rounds, args.runs, args.warmup = "1,8", 2, 3, 2
    gpu = resolve_device(args.device)
    devices = [gpu, torch.device("cpu")] if gpu.type == "cuda" else [gpu]
    name = torch.cuda.get_device_name(gpu) if gpu.type == "cuda" else "cpu (no CUDA device)"
    t0 = time.perf_counter()
    result = {
        "experiment": "gpu_speedups",
        "device": name,
        "environment": environment(seed=0),
        "protocol": {
            "input": "1x28x28 synthetic",
            "weights": "random",
            "rounds": args.rounds,
            "runs": args.runs,
            "threads": args.threads,
            "quick": args.quick,
            "int8": "CPU runtimes only (ONNX Runtime / torch.ao); not timed on GPU",
        },  # fmt: skip
        "rows": [],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    built = variants(args.quick)
    for method, (dense, compressed, runtime) in built.items():
        for device in devices:
            if device.type == "cpu" and runtime == "eager-fp16":
                continue  # no fast fp16 CPU kernels: the row would only say that
            batches = args.batches if device.type == "cuda" else args.cpu_batches or args.batches
            for batch in (int(b) for b in batches.split(",")):
                row = {"method": method, "device": str(device), "batch": batch, "runtime": runtime,
                       **time_pair(dense, compressed, runtime, device, batch, args)}  # fmt: skip
                result["rows"].append(row)
                result["seconds"] = round(time.perf_counter() - t0, 1)
                out.write_text(
                    json.dumps(result, indent=1) + "\n"
                )  # a row at a time: a cut run keeps them
                print(json.dumps(row), flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
