"""LeNet-300-100 on MNIST: parameters vs accuracy when its fully connected layers are SVD-factored.

Train the dense net (3 epochs, SGD + cosine), then for several spectral energies replace every
Linear layer whose factorisation saves MACs by two Linear layers (``LowRank(method="svd",
rank="energy")``) and report test top-1 without fine-tuning and after one epoch of fine-tuning
(lr 0.01). An EVBMF row shows the ranks the analytic rule picks on trained weights.

Usage:
    python benchmarks/lowrank_lenet300_svd.py                    # ~5 min on 2 cores
    python benchmarks/lowrank_lenet300_svd.py --train-limit 20000 --energies 0.9 0.7
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from nnshrink import compress_, data
from nnshrink.lowrank import LowRank
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "lowrank_lenet300_svd.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--energies", nargs="+", type=float,
                   default=[0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3])  # fmt: skip
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.manual_seed(0)  # initial weights too: reproducible runs
    torch.set_num_threads(args.threads)
    t0 = time.time()
    train = data.loader("mnist", "train", 128, train=True, limit=args.train_limit)
    test = data.loader("mnist", "test", 1000)
    x = torch.zeros(1, 1, 28, 28)
    dense = create("lenet300")
    fit(dense, train, epochs=args.epochs, lr=0.05, progress=False)
    dense.eval()
    base = evaluate(dense, test)
    results = {
        "benchmark": "lowrank_lenet300_svd",
        "dense": {
            "params": count_params(dense),
            "macs": count_macs(dense, x),
            "top1": base["top1"],
            "epochs": args.epochs,
        },  # fmt: skip
        "finetune_epochs": args.finetune_epochs,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": environment(),
        "rows": [],
    }
    print(f"dense top1 {base['top1']:.4f} params {count_params(dense)}", flush=True)
    settings = [{"rank": "energy", "energy": e} for e in args.energies] + [{"rank": "evbmf"}]
    for setting in settings:
        model = copy.deepcopy(dense)
        report = compress_(model, LowRank(method="svd", **setting), example_inputs=x)
        model.eval()
        row = {
            **setting,
            "ranks": {r.name: list(r.ranks) for r in report.decomposed},
            "skipped": [r.name for r in report.skipped],
            "rel_errors": {r.name: round(r.rel_error, 4) for r in report.decomposed},
            "params": count_params(model),
            "macs": count_macs(model, x),
            "top1_no_finetune": evaluate(model, test)["top1"],
        }
        if args.finetune_epochs:
            fit(model, train, epochs=args.finetune_epochs, lr=0.01, progress=False)
            model.eval()
            row["top1_finetuned"] = evaluate(model, test)["top1"]
        row["compression"] = round(results["dense"]["params"] / row["params"], 3)
        print(json.dumps(row), flush=True)
        results["rows"].append(row)
        results["wall_s"] = round(time.time() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
