"""Int8 on ResNet-20: accuracy drop and measured CPU latency of every execution path.

Part 1 (accuracy): ResNet-20 (1x28x28) trained briefly on a Fashion-MNIST subset, then quantized
with each path; top-1 on a test subset.
Part 2 (latency): ResNet-20 at 3x32x32 (CIFAR shape, weights untrained — latency does not depend
on their values), batch 1 and 64, ``--threads`` threads, medians of alternating rounds (every path timed in
turn, ``--rounds`` times), all in this process:
fp32 eager, fp32 ONNX Runtime, nnshrink int8 (ORT QDQ with our observer ranges), torch.ao FX int8
(x86 engine, through nnshrink's torch-fx backend) and ORT ``quantize_static`` with ORT's own
MinMax calibration.

Run:  .venv/bin/python benchmarks/int8_resnet20.py [--limit 10000 --epochs 2]
Writes benchmarks/results/int8_resnet20.json and saves the trained model for
benchmarks/observers.py to reuse.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from nnshrink import data, models
from nnshrink.metrics.latency import interleaved
from nnshrink.quantization.backends.ort import (
    OrtInt8Module,
    export_fp32_onnx,
    quantize_with_ort_calibration,
)
from nnshrink.quantization.ptq import PTQ, iter_inputs, quantize_ptq
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"
CKPT = Path("/tmp/nnshrink_resnet20_fmnist.pt")


def trained_model(args) -> torch.nn.Module:
    model = models.create("resnet20", in_channels=1, input_size=28)
    if CKPT.exists() and not args.retrain:
        model.load_state_dict(torch.load(CKPT))
        return model.eval()
    train = data.loader(
        "fashion-mnist", "train", 128, train=True, limit=args.limit, root=args.data_root
    )
    t0 = time.time()
    fit(model, train, epochs=args.epochs, lr=0.1, progress=False)
    print(f"trained {args.epochs} epoch(s) on {args.limit} samples in {time.time() - t0:.0f}s")
    torch.save(model.state_dict(), CKPT)
    return model.eval()


def accuracy_part(args) -> list[dict]:
    model = trained_model(args)
    test = data.loader("fashion-mnist", "test", 256, limit=args.test_limit, root=args.data_root)
    calib = iter_inputs(
        data.loader("fashion-mnist", "train", 64, limit=64 * 8, root=args.data_root), 8
    )
    rows = [{"path": "fp32 eager", "top1": evaluate(model, test)["top1"]}]
    fp32_ort = OrtInt8Module(export_fp32_onnx(model, (calib[0],)), threads=args.threads)
    rows.append({"path": "fp32 onnxruntime", "top1": evaluate(fp32_ort, test)["top1"]})
    for observer in ("minmax", "percentile", "mse", "kl"):
        cfg = PTQ(observer=observer, backend="onnxruntime")
        q = quantize_ptq(copy.deepcopy(model), cfg, calib).model
        rows.append({"path": f"nnshrink int8 ORT ({observer})", "top1": evaluate(q, test)["top1"]})
    for observer in ("minmax", "mse"):
        q = quantize_ptq(model, PTQ(observer=observer, backend="torch-fx"), calib).model
        rows.append({"path": f"torch.ao FX int8 ({observer})", "top1": evaluate(q, test)["top1"]})
    q = quantize_with_ort_calibration(model, calib, method="MinMax")
    rows.append(
        {"path": "ORT quantize_static int8 (ORT MinMax)", "top1": evaluate(q, test)["top1"]}
    )
    base = rows[0]["top1"]
    for r in rows:
        r["drop_points"] = round(100 * (base - r["top1"]), 2)
    return rows


def latency_part(args) -> list[dict]:
    torch.manual_seed(0)
    model = models.create("resnet20", in_channels=3, input_size=32).eval()
    calib = [torch.randn(64, 3, 32, 32) for _ in range(4)]
    paths = {
        "fp32 eager": model,
        "fp32 onnxruntime": OrtInt8Module(export_fp32_onnx(model, (calib[0],)), args.threads),
        "nnshrink int8 ORT (minmax)": quantize_ptq(
            copy.deepcopy(model), PTQ(backend="onnxruntime"), calib
        ).model,
        "torch.ao FX int8": quantize_ptq(model, PTQ(backend="torch-fx"), calib).model,
        "ORT quantize_static int8": quantize_with_ort_calibration(model, calib),
    }
    for m in paths.values():
        if isinstance(m, OrtInt8Module):
            m.set_threads(args.threads)
    rows = []
    for batch, runs in ((1, args.runs), (64, max(args.runs // 10, 2))):
        x = torch.randn(batch, 3, 32, 32)
        # alternating short rounds: load from other processes falls on every path alike
        with torch.no_grad():
            timed = interleaved({n: (lambda m=m, x=x: m(x)) for n, m in paths.items()},
                                rounds=args.rounds, runs=runs)  # fmt: skip
        base = timed["fp32 eager"]["median"]
        for name, t in timed.items():
            rows.append({
                "path": name,
                "batch": batch,
                "median_ms": round(t["median"], 4),
                "p10_ms": round(t["p10"], 4),
                "speedup_vs_eager": round(base / t["median"], 2),
            })  # fmt: skip
            print(rows[-1])
        ours = timed["nnshrink int8 ORT (minmax)"]["median"]
        for ref in ("torch.ao FX int8", "ORT quantize_static int8"):
            rows.append({"path": f"ratio nnshrink / {ref}", "batch": batch,
                         "latency_ratio": round(ours / timed[ref]["median"], 3)})  # fmt: skip
            print(rows[-1])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=10000, help="training samples")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None, help="Fashion-MNIST directory (default location)")
    p.add_argument("--runs", type=int, default=20, help="timed calls per path per round (b1)")
    p.add_argument("--rounds", type=int, default=40, help="alternating rounds over the paths")
    p.add_argument("--repeats", type=int, default=1, help="repeat the whole latency part")
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "int8_resnet20.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = {
        "machine": environment(),
        "setup": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    # whole latency measurement repeated: the spread of the ratios between repeats is the noise
    repeats = [latency_part(args) for _ in range(args.repeats)]
    out["latency"] = repeats[0]
    out["latency_repeats"] = repeats
    out["ratio_medians"] = {
        f"{r['path']} b{r['batch']}": statistics.median(
            x["latency_ratio"] for rep in repeats for x in rep
            if x["path"] == r["path"] and x["batch"] == r["batch"]
        )
        for r in repeats[0] if "latency_ratio" in r
    }  # fmt: skip
    print(out["ratio_medians"])
    if not args.skip_accuracy:
        out["accuracy"] = accuracy_part(args)
        for r in out["accuracy"]:
            print(r)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
