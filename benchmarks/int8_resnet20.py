"""Int8 ResNet-20: the path nnshrink picks (PTQ() = static, backend="auto") against torch.ao FX
and ONNX Runtime ``quantize_static``, at batch 1 and 64, and the accuracy drop of each path.

Latency (issue 26 goal: ours <= 1.05x of min(torch.ao FX, ORT quantize_static) at b1 and b64
over 3 repeats): ResNet-20 at 3x32x32 (CIFAR shape; weights untrained, latency does not depend on
their values), ``--threads`` threads. Paths, all in this process and timed in alternating rounds
(``nnshrink.metrics.latency.interleaved``), medians:

* ``nnshrink int8 (auto)``: ``compress_(model, PTQ(), example_inputs=calib).artifact``, the
  ``AutoInt8Module`` that runs each batch on the runtime it measured faster during ``compress_``
  (its timings and choice are stored in the JSON);
* ``torch.ao FX int8``: torch.ao's own ``x86`` default qconfig and observers;
* ``ORT quantize_static int8``: ONNX Runtime's own MinMax calibration, QDQ, per-channel;
* fp32 eager and fp32 ONNX Runtime for reference.

Every ONNX Runtime session parks its worker threads after a run (``stop_spinning``): spinning
workers would otherwise slow whichever PyTorch path runs next.

Accuracy: ResNet-20 (1x28x28) trained ``--epochs`` on ``--limit`` Fashion-MNIST samples (scaled
down from the paper protocol for a shared 2-core CPU), top-1 on ``--test-limit`` test images for
fp32, each runtime of our artefact, and the two baselines.

Run:  nice -n 10 flock /tmp/nnshrink-timing.lock .venv/bin/python benchmarks/int8_resnet20.py
Writes benchmarks/results/int8_resnet20.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

import nnshrink as ns
from nnshrink import data, models
from nnshrink.metrics.latency import interleaved
from nnshrink.quantization import PTQ
from nnshrink.quantization.backends.ort import export_fp32_onnx, quantize_with_ort_calibration
from nnshrink.quantization.backends.ort_module import OrtInt8Module
from nnshrink.quantization.backends.torch_ao import quantize_with_torch_ao_defaults
from nnshrink.quantization.ptq import iter_inputs
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"
SEED = 0


class OrtPath(torch.nn.Module):
    """The ONNX Runtime graph of an AutoInt8Module, whatever the batch size."""

    def __init__(self, auto: OrtInt8Module) -> None:
        super().__init__()
        self.auto = auto

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return OrtInt8Module.forward(self.auto, x)


def parked(module: OrtInt8Module, threads: int) -> OrtInt8Module:
    module.set_threads(threads, stop_spinning=True)
    return module


def latency_repeat(args, repeat: int) -> dict:
    torch.manual_seed(SEED + repeat)
    model = models.create("resnet20", in_channels=3, input_size=32).eval()
    calib = [torch.randn(64, 3, 32, 32) for _ in range(4)]
    t0 = time.perf_counter()
    result = ns.compress_(copy.deepcopy(model), PTQ(), example_inputs=calib)
    compress_s = time.perf_counter() - t0
    ours = result.artifact
    paths = {
        "fp32 eager": model,
        "fp32 onnxruntime": parked(
            OrtInt8Module(export_fp32_onnx(model, (calib[0],))), args.threads
        ),
        "nnshrink int8 (auto)": ours,
        "torch.ao FX int8": quantize_with_torch_ao_defaults(model, calib),
        "ORT quantize_static int8": parked(
            quantize_with_ort_calibration(model, calib), args.threads
        ),
    }
    rows = []
    for batch, runs in ((1, args.runs), (64, max(args.runs // 10, 2))):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            timed = interleaved({n: (lambda m=m, x=x: m(x)) for n, m in paths.items()},
                                rounds=args.rounds, runs=runs, seed=repeat)  # fmt: skip
        base = timed["fp32 eager"]["median"]
        for name, t in timed.items():
            rows.append({"path": name, "batch": batch, "median_ms": round(t["median"], 4),
                         "p10_ms": round(t["p10"], 4),
                         "speedup_vs_eager": round(base / t["median"], 2)})  # fmt: skip
        best = min(timed["torch.ao FX int8"]["median"], timed["ORT quantize_static int8"]["median"])
        rows.append({
            "path": "ratio nnshrink / min(torch.ao FX, ORT quantize_static)",
            "batch": batch,
            "picked": ours.runtime_for(batch),
            "latency_ratio": round(timed["nnshrink int8 (auto)"]["median"] / best, 3),
        })  # fmt: skip
        print(rows[-1], flush=True)
    return {
        "rows": rows,
        "auto_timings_ms": result.summary.timings,
        "auto_choice": result.summary.choice,
        "compress_seconds": round(compress_s, 1),
        "load_average_after": os.getloadavg(),
    }


def trained_model(args) -> torch.nn.Module:
    torch.manual_seed(SEED)
    model = models.create("resnet20", in_channels=1, input_size=28)
    train = data.loader("fashion-mnist", "train", 128, train=True, limit=args.limit)
    t0 = time.time()
    fit(model, train, epochs=args.epochs, lr=0.1, progress=False, seed=SEED)
    print(f"trained {args.epochs} epoch(s) on {args.limit} samples in {time.time() - t0:.0f}s")
    return model.eval()


def accuracy_part(args) -> list[dict]:
    model = trained_model(args)
    test = data.loader("fashion-mnist", "test", 256, limit=args.test_limit)
    calib = iter_inputs(data.loader("fashion-mnist", "train", 64, limit=64 * 8), 8)
    work = copy.deepcopy(model)
    result = ns.compress_(work, PTQ(), example_inputs=calib)
    auto = result.artifact
    rows = [{"path": "fp32 eager", "top1": evaluate(model, test)["top1"]}]
    rows.append({"path": "nnshrink int8 (auto), ONNX Runtime graph",
                 "top1": evaluate(OrtPath(auto), test)["top1"]})  # fmt: skip
    rows.append({"path": "nnshrink int8 (auto), torch.ao FX graph",
                 "top1": evaluate(auto.torch_module, test)["top1"]})  # fmt: skip
    rows.append({"path": "nnshrink calibrated model in place (PyTorch simulation)",
                 "top1": evaluate(work, test)["top1"]})  # fmt: skip
    fx = quantize_with_torch_ao_defaults(model, calib)
    rows.append({"path": "torch.ao FX int8 (its defaults)", "top1": evaluate(fx, test)["top1"]})
    ort_q = quantize_with_ort_calibration(model, calib)
    rows.append({"path": "ORT quantize_static int8 (ORT MinMax)",
                 "top1": evaluate(ort_q, test)["top1"]})  # fmt: skip
    base = rows[0]["top1"]
    for r in rows:
        r["drop_points"] = round(100 * (base - r["top1"]), 2)
        print(r, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=10000, help="training samples")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20, help="timed calls per path per round (b1)")
    p.add_argument("--rounds", type=int, default=20, help="alternating rounds over the paths")
    p.add_argument("--repeats", type=int, default=3, help="independent latency repeats")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "int8_resnet20.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = {
        "machine": environment(SEED),
        "protocol": vars(args) | {"out": str(args.out), "ort_sessions": "parked (stop_spinning)"},
    }
    repeats = [latency_repeat(args, r) for r in range(args.repeats)]
    out["latency_repeats"] = repeats
    ratios = {}
    for batch in (1, 64):
        values = [row["latency_ratio"] for rep in repeats for row in rep["rows"]
                  if "latency_ratio" in row and row["batch"] == batch]  # fmt: skip
        picks = [row["picked"] for rep in repeats for row in rep["rows"]
                 if "latency_ratio" in row and row["batch"] == batch]  # fmt: skip
        ratios[f"b{batch}"] = {"median": statistics.median(values), "min": min(values),
                               "max": max(values), "picked": picks,
                               "goal_le_1.05": statistics.median(values) <= 1.05}  # fmt: skip
    out["ratio_vs_best_baseline"] = ratios
    print(ratios)
    if not args.skip_accuracy:
        out["accuracy"] = accuracy_part(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
