"""ResNet-20 / VGG-16 on Fashion-MNIST: accuracy after Tucker-2 / CP at half the MACs of the 3x3 convs.

Train a dense ``--model`` (``--epochs``), decompose every 3x3 conv but the stem with ``LowRank(method,
rank="macs", macs_ratio=0.5)``, and report test top-1 before fine-tuning and after a short
fine-tune (``nnshrink.train.fit``). A small-budget run: ``--limit`` training images only.

Usage:
    python benchmarks/lowrank_fashion_finetune.py --limit 5000 --test-limit 2000
    python benchmarks/lowrank_fashion_finetune.py --device cuda --model vgg16 --limit 0 \
        --test-limit 0 --epochs 20 --finetune-epochs 8

Decomposition runs on the CPU (tensorly), training and evaluation on ``--device``.

``--round-to 16 1`` decomposes once per rank rounding (ranks in multiples of 16 run 2x faster in
ONNX Runtime at batch 32 on VGG-16, docs/lowrank.md); with a rounding above 1 the per-layer MAC
ratio is bisected so that the decomposed convs keep the same MACs as unrounded ranks
(``lowrank_latency.decompose_at``). ``--latency`` then times every fine-tuned model beside the
dense one in this process (eager, eager channels_last, ONNX Runtime; batch ``--latency-batch``;
``--threads`` threads). ``--save-dense`` / ``--load-dense`` keep the trained dense model between
runs. ``--methods cp-fused`` is CP with ``cp_fuse_spatial=True`` (one kxk depthwise conv per
layer). ``--channels-last`` fine-tunes in channels_last: on CPU, CP's depthwise convs on NCHW
tensors are ~200x slower (docs/lowrank.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from nnshrink import data
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

sys.path.insert(0, str(Path(__file__).parent))  # sibling benchmark: one decompose_at, one timer
from lowrank_latency import compare, decompose_at  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "lowrank_fashion_finetune.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet20", choices=["resnet20", "resnet56", "vgg16"])
    p.add_argument("--lr", type=float, default=0.05, help="dense peak LR (fine-tune: lr / 5)")
    p.add_argument("--epochs", type=int, default=2, help="dense training epochs")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-lr", type=float, default=None, help="default: lr / 5")
    p.add_argument("--limit", type=int, default=5000, help="first N training images (0 = all)")
    p.add_argument("--test-limit", type=int, default=2000, help="0 = all")
    p.add_argument("--methods", nargs="+", default=["tucker", "cp"])
    p.add_argument("--cp-iters", type=int, default=25)
    p.add_argument("--round-to", nargs="+", type=int, default=[1], help="rank multiples to try")
    p.add_argument("--bisect-steps", type=int, default=8)
    p.add_argument("--latency", action="store_true", help="time each model beside the dense")
    p.add_argument("--latency-batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="fine-tune in channels_last (CP on CPU: NCHW depthwise convs crawl)",
    )
    p.add_argument("--save-dense", type=Path, default=None)
    p.add_argument("--load-dense", type=Path, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.manual_seed(0)  # initial weights too: reproducible runs
    torch.set_num_threads(args.threads)
    t0 = time.time()
    device = torch.device(args.device)
    train = data.loader("fashion-mnist", "train", 128, train=True, limit=args.limit or None)
    test = data.loader("fashion-mnist", "test", 500, limit=args.test_limit or None)
    train, test = train.to(device), test.to(device)
    x = torch.zeros(1, 1, 28, 28)
    if args.load_dense is not None:
        dense, _ = load_checkpoint(args.load_dense)
        dense = dense.to(device)
    else:
        dense = create(args.model, in_channels=1, input_size=28).to(device)
        fit(dense, train, epochs=args.epochs, lr=args.lr, progress=False)
    if args.save_dense is not None:
        save_checkpoint(dense.cpu(), args.save_dense)
        dense = dense.to(device)
    dense.eval()
    results = {
        "benchmark": "lowrank_fashion_finetune",
        "model": args.model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "train_images": train.num_samples,
        "test_images": test.num_samples,
        "dense": {
            "top1": evaluate(dense, test)["top1"],
            "macs": count_macs(dense, x.to(device)),
            "params": count_params(dense),
            "epochs": None if args.load_dense else args.epochs,
            "loaded_from": None if args.load_dense is None else str(args.load_dense),
        },  # fmt: skip
        "environment": environment(0),
        "rows": [],
    }
    print(json.dumps(results["dense"]), flush=True)
    plans = [(method, r) for r in args.round_to for method in args.methods]
    for method, round_to in plans:
        # round_to=1 decomposes at exactly macs_ratio=0.5; coarser roundings are bisected
        opts = argparse.Namespace(cp_iters=args.cp_iters, round_to=round_to, macs_ratio=0.5,
                                  bisect_steps=args.bisect_steps)  # fmt: skip
        model, report, layer_ratio = decompose_at(copy.deepcopy(dense).cpu(), method, x, opts)
        model = model.to(device).eval()
        row = {
            "method": method,
            "round_to": round_to,
            "layer_macs_ratio": round(layer_ratio, 4),
            "ranks": [list(r.ranks) for r in report.decomposed],
            "macs": count_macs(model, x.to(device)),
            "decomposed_macs_before": sum(r.macs_before for r in report.decomposed),
            "decomposed_macs_after": sum(r.macs_after for r in report.decomposed),
            "params": count_params(model),
            "mean_rel_error": round(
                sum(r.rel_error for r in report.decomposed) / len(report.decomposed), 4
            ),
            "top1_no_finetune": evaluate(model, test)["top1"],
        }
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        fit(
            model,
            train,
            epochs=args.finetune_epochs,
            lr=args.finetune_lr or args.lr / 5,
            progress=False,
        )
        model = model.to(memory_format=torch.contiguous_format).eval()  # compare() sets layouts
        row["top1_finetuned"] = evaluate(model, test)["top1"]
        if args.latency:
            xb = torch.randn(args.latency_batch, 1, 28, 28)
            row["latency"] = compare(dense.cpu().eval(), model.cpu().eval(), xb, args.rounds,
                                     args.runs)  # fmt: skip
            row["latency"]["batch"] = args.latency_batch
            dense = dense.to(device)
        print(json.dumps(row), flush=True)
        results["rows"].append(row)
        results["wall_s"] = round(time.time() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
