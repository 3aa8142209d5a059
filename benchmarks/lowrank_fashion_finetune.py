"""ResNet-20 / VGG-16 on Fashion-MNIST: accuracy after Tucker-2 / CP at half the MACs of the 3x3 convs.

Train a dense ``--model`` (``--epochs``), decompose every 3x3 conv but the stem with ``LowRank(method,
rank="macs", macs_ratio=0.5)``, and report test top-1 before fine-tuning and after a short
fine-tune (``nnshrink.train.fit``). A small-budget run: ``--limit`` training images only.

Usage:
    python benchmarks/lowrank_fashion_finetune.py --limit 5000 --test-limit 2000
    python benchmarks/lowrank_fashion_finetune.py --device cuda --model vgg16 --limit 0 \
        --test-limit 0 --epochs 20 --finetune-epochs 8

Decomposition runs on the CPU (tensorly), training and evaluation on ``--device``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

from nnshrink import compress_, data
from nnshrink.lowrank import LowRank
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

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
    dense = create(args.model, in_channels=1, input_size=28).to(device)
    fit(dense, train, epochs=args.epochs, lr=args.lr, progress=False)
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
            "epochs": args.epochs,
        },  # fmt: skip
        "environment": environment(0),
        "rows": [],
    }
    print(json.dumps(results["dense"]), flush=True)
    for method in args.methods:
        model = copy.deepcopy(dense).cpu()
        cfg = LowRank(method=method, rank="macs", macs_ratio=0.5, n_iter_max=args.cp_iters)
        report = compress_(model, cfg, example_inputs=x,
                           filter_fn=lambda m, n: not (isinstance(m, nn.Conv2d) and m.in_channels < 4))  # fmt: skip
        model = model.to(device).eval()
        row = {
            "method": method,
            "macs": count_macs(model, x.to(device)),
            "params": count_params(model),
            "mean_rel_error": round(
                sum(r.rel_error for r in report.decomposed) / len(report.decomposed), 4
            ),
            "top1_no_finetune": evaluate(model, test)["top1"],
        }
        fit(
            model,
            train,
            epochs=args.finetune_epochs,
            lr=args.finetune_lr or args.lr / 5,
            progress=False,
        )
        model.eval()
        row["top1_finetuned"] = evaluate(model, test)["top1"]
        print(json.dumps(row), flush=True)
        results["rows"].append(row)
        results["wall_s"] = round(time.time() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
