"""XNOR-Net accuracy: LeNet-5 on MNIST and ResNet-20 on Fashion-MNIST, beside their float models.

Protocol (CPU only, scaled down for a shared 2-core machine; every number is in the JSON):

1. Train the float model from scratch (``--fp-epochs``, SGD with momentum, cosine schedule).
2. Convert a copy with ``BinaryWeights(mode="xnor", activations=True)``: every Conv2d/Linear
   except the first and the last becomes an XNOR layer (binary weights with per-channel
   ``alpha``, binary activations with the paper's ``K``, and the input batch norm of the paper's
   BN -> BinActiv -> BinConv block), as XNOR-Net keeps its first and last layers in float.
3. Fine-tune it (``--epochs``, Adam, cosine) with the straight-through estimators.
4. Evaluate in eval mode, where the XNOR layers run the bit-packed XNOR + popcount kernel; then
   ``ns.finalize`` (packed deploy layers), evaluate again (must be identical), and save ``.nns``.

Optionally (``--bwn``) the weights-only variant (``BinaryWeights(mode="xnor")``: binary weights,
float activations) with the same fine-tuning, to separate the cost of binary activations.

The paper's ImageNet numbers (Rastegari et al. 2016, Table 2, [M]) are stored for context:
AlexNet float 56.6 % -> XNOR 44.2 % top-1 (BWN 56.8 %); ResNet-18 69.3 % -> 51.2 % (BWN 60.8 %).

Run from the repository root, e.g.
``nice -n 10 env PYTHONPATH=. .venv/bin/python benchmarks/xnor_accuracy.py --model lenet5``.
Writes ``benchmarks/results/xnor_accuracy_<model>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import nnshrink as ns
from nnshrink import data, models
from nnshrink.binary import BinaryWeights, xnor_backend
from nnshrink.binary.layers import pack_low_bit
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"
SETUPS = {
    "lenet5": {"dataset": "mnist", "kwargs": {}, "lr": 0.01},
    "resnet20": {"dataset": "fashion-mnist", "kwargs": {"in_channels": 1}, "lr": 0.1},
}
PAPER = {
    "source": "Rastegari et al. 2016 (XNOR-Net), ImageNet top-1, Table 2 [M]",
    "alexnet": {"float": 0.566, "bwn": 0.568, "xnor": 0.442},
    "resnet18": {"float": 0.693, "bwn": 0.608, "xnor": 0.512},
}


def nns_bytes(model: torch.nn.Module) -> int:
    """Size of the model saved as ``.nns`` (default encodings)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.nns")
        ns.storage.save(model, path)
        return os.path.getsize(path)


def finetune(
    model: torch.nn.Module, config: BinaryWeights, train, test, args, name: str
) -> dict[str, object]:
    """Convert, fine-tune, evaluate (kernel path), finalize and evaluate again."""
    rows = ns.compress_(model, config).summary
    before = evaluate(model, test)
    t0 = time.perf_counter()
    hist = fit(model, train, epochs=args.epochs, lr=args.q_lr, optimizer="adam",
               weight_decay=0.0, progress=False, val_loader=test, seed=1)  # fmt: skip
    seconds = time.perf_counter() - t0
    after = evaluate(model, test)
    packed = pack_low_bit(model)
    run: dict[str, object] = {
        "method": name,
        "config": config.to_dict(),
        "layers": [r.name for r in rows],
        "top1_before_finetune": before["top1"],
        "top1": after["top1"],
        "val_top1_per_epoch": [e["val_top1"] for e in hist.epochs],
        "train_seconds": seconds,
        "binary_weight_bytes": sum(p.nbytes for p in packed.values()),
        "binary_layer_float_bytes": sum(r.float_bytes for r in rows),
    }
    if config.activations:
        ns.finalize(model)
        run["top1_finalized"] = evaluate(model, test)["top1"]
        run["nns_bytes_finalized"] = nns_bytes(model)
    print(f"{name}: top1 {before['top1']:.4f} -> {after['top1']:.4f} in {seconds:.0f} s")
    return run


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lenet5", choices=sorted(SETUPS))
    p.add_argument("--fp-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="float SGD lr (default per model)")
    p.add_argument("--q-lr", type=float, default=1e-3, help="Adam lr of the binary fine-tuning")
    p.add_argument("--bwn", action="store_true", help="also the weights-only variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="training samples (quick runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    setup = SETUPS[args.model]
    out = args.out or RESULTS / f"xnor_accuracy_{args.model}.json"
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    train = data.loader(setup["dataset"], "train", 128, train=True, limit=args.limit)
    test = data.loader(setup["dataset"], "test", 1000)
    model = models.create(args.model, **setup["kwargs"])
    t0 = time.perf_counter()
    fit(model, train, epochs=args.fp_epochs, lr=args.lr or setup["lr"], progress=False,
        seed=args.seed)  # fmt: skip
    fp = {
        "method": "float32",
        "top1": evaluate(model, test)["top1"],
        "train_seconds": time.perf_counter() - t0,
        "nns_bytes": nns_bytes(model),
    }
    print(f"float32: top1 {fp['top1']:.4f}")
    runs = [fp]
    variants = [("xnor", BinaryWeights(mode="xnor", activations=True))]
    if args.bwn:
        variants.append(("bwn", BinaryWeights(mode="xnor")))
    for name, config in variants:
        runs.append(finetune(copy.deepcopy(model), config, train, test, args, name))

    result = {
        "benchmark": "xnor_accuracy",
        "environment": environment(args.seed),
        "kernel_backend": xnor_backend(),
        "model": args.model,
        "dataset": setup["dataset"],
        "protocol": (
            (f"first {args.limit} training images; " if args.limit else "")
            + f"float: {args.fp_epochs} epochs SGD (lr {args.lr or setup['lr']}, momentum 0.9, "
            f"wd 5e-4, cosine), batch 128; xnor: convert the float model (first and last layer "
            f"float), {args.epochs} epochs Adam (lr {args.q_lr}, cosine, no wd); eval in eval "
            "mode = the XNOR+popcount kernel; CPU, scaled down from the paper's ImageNet runs"
        ),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "paper_imagenet": PAPER,
        "seconds": time.perf_counter() - t_start,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({r["method"]: r["top1"] for r in runs}))
    return result


if __name__ == "__main__":
    main()
