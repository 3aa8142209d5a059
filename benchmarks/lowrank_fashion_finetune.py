"""ResNet-20 on Fashion-MNIST: accuracy after Tucker-2 / CP at half the MACs of the 3x3 convs.

Train a dense ResNet-20 briefly, decompose every 3x3 conv but the stem with ``LowRank(method,
rank="macs", macs_ratio=0.5)``, and report test top-1 before fine-tuning and after a short
fine-tune (``nnshrink.train.fit``). A small-budget run: ``--limit`` training images only.

Usage:
    python benchmarks/lowrank_fashion_finetune.py --limit 5000 --test-limit 2000
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
    p.add_argument("--epochs", type=int, default=2, help="dense training epochs")
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--limit", type=int, default=5000, help="first N training images")
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--methods", nargs="+", default=["tucker", "cp"])
    p.add_argument("--cp-iters", type=int, default=25)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train = data.loader("fashion-mnist", "train", 128, train=True, limit=args.limit)
    test = data.loader("fashion-mnist", "test", 500, limit=args.test_limit)
    x = torch.zeros(1, 1, 28, 28)
    dense = create("resnet20", in_channels=1, input_size=28)
    fit(dense, train, epochs=args.epochs, lr=0.05, progress=False)
    dense.eval()
    results = {
        "benchmark": "lowrank_fashion_finetune",
        "train_images": args.limit,
        "test_images": args.test_limit,
        "dense": {
            "top1": evaluate(dense, test)["top1"],
            "macs": count_macs(dense, x),
            "params": count_params(dense),
            "epochs": args.epochs,
        },  # fmt: skip
        "torch": torch.__version__,
        "machine": environment(),
        "rows": [],
    }
    print(json.dumps(results["dense"]), flush=True)
    for method in args.methods:
        model = copy.deepcopy(dense)
        cfg = LowRank(method=method, rank="macs", macs_ratio=0.5, n_iter_max=args.cp_iters)
        report = compress_(model, cfg, example_inputs=x,
                           filter_fn=lambda m, n: not (isinstance(m, nn.Conv2d) and m.in_channels < 4))  # fmt: skip
        model.eval()
        row = {
            "method": method,
            "macs": count_macs(model, x),
            "params": count_params(model),
            "mean_rel_error": round(
                sum(r.rel_error for r in report.decomposed) / len(report.decomposed), 4
            ),
            "top1_no_finetune": evaluate(model, test)["top1"],
        }
        fit(model, train, epochs=args.finetune_epochs, lr=0.01, progress=False)
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
