"""LeNet-5 on MNIST: ternary weights with TWN and TTQ.

Two LeNet-5s: ``--model lenet5`` (Caffe 20-50-500-10, Deep Compression's) and ``--model
lenet5-twn`` (the TWN paper's 32-C5 MP2 64-C5 MP2 512-FC, here with batch norm).

Paper numbers: TWN LeNet-5 99.35 % top-1 against 99.41 % in float (Li, Zhang, Liu 2016, from
memory, unverified); target here >= 99.3 %.

Recipe: train the float network (``--fp-epochs``, SGD), then for each method convert a copy with
``Ternary(mode=...)`` and fine-tune it (``--epochs``) with the straight-through estimator: the
latent float weights are trained, the forward uses ternary weights (TWN: threshold 0.7·E|W| and
one scale per layer; TTQ: learned positive/negative scales, threshold 0.05·max|W|). By default the
first conv and the last linear layer stay in float (``--all-layers`` ternarizes them too).

Storage: ternary layers bit-packed at 2 bits per weight (``pack_low_bit``) plus their scales, plus
the float32 layers and biases; compared with float32 for the whole network.

Run from the repository root: ``PYTHONPATH=. .venv/bin/python benchmarks/ternary_lenet5.py``
(~10 min on 2 threads). Writes ``benchmarks/results/ternary_lenet5.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import time
from pathlib import Path

import torch
from torch import nn

from nnshrink import data, models
from nnshrink.binary import Ternary
from nnshrink.binary.layers import pack_low_bit
from nnshrink.core import compress_
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    """Machine and versions for the JSON (shared helper, see nnshrink.utils.environment)."""
    return environment()


def packed_model_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the deployed model: packed low-bit weights + every other parameter in float32."""
    packed = pack_low_bit(model)
    low_bit = sum(p.nbytes for p in packed.values())
    skip = {f"{name}.weight" for name in packed}
    skip |= {f"{name}.{s}" for name in packed for s in ("wp", "wn")}  # inside packed scales
    other = sum(p.numel() * 4 for n, p in model.named_parameters() if n not in skip)
    return {"packed_weights": low_bit, "float_params": other, "total": low_bit + other}


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lenet5", choices=["lenet5", "lenet5-twn"])
    p.add_argument("--fp-epochs", type=int, default=4)
    p.add_argument(
        "--fp-ckpt",
        type=Path,
        default=None,
        help="reuse this trained float model if it exists, else save it there",
    )
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.01)  # 0.05 diverges (no batch norm)
    # Adam for the ternary fine-tuning: TTQ's scale gradients sum over every weight of a layer
    # (hundreds of thousands in fc1), which makes plain SGD at usual learning rates diverge.
    p.add_argument("--q-lr", type=float, default=5e-4)
    p.add_argument("--q-optimizer", default="adam")
    p.add_argument("--modes", nargs="+", default=["twn", "ttq"])
    p.add_argument("--all-layers", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS / "ternary_lenet5.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)  # initial weights too: reproducible runs
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    device = torch.device(args.device)

    train = data.loader("mnist", "train", 128, train=True, limit=args.limit)
    test = data.loader("mnist", "test", 1000)
    train, test = train.to(device), test.to(device)
    model = models.create(args.model).to(device)
    t0 = time.perf_counter()
    if args.fp_ckpt is not None and args.fp_ckpt.exists():
        model.load_state_dict(torch.load(args.fp_ckpt, map_location=device))
        print(f"float model from {args.fp_ckpt}")
    else:
        fit(model, train, epochs=args.fp_epochs, lr=args.lr, progress=False, seed=0)
        if args.fp_ckpt is not None:
            torch.save(model.state_dict(), args.fp_ckpt)
    fp = evaluate(model, test)
    fp_bytes = sum(p.numel() * 4 for p in model.parameters())
    runs = [{"method": "float32", "top1": fp["top1"], "bytes": fp_bytes, "compression": 1.0,
             "train_seconds": time.perf_counter() - t0}]  # fmt: skip
    print(f"float32: top1 {fp['top1']:.4f}, {fp_bytes} bytes")

    exclude = () if args.all_layers else ("@first", "@last")
    for mode in args.modes:
        q = copy.deepcopy(model)
        rows = compress_(q, Ternary(mode=mode, exclude=exclude))
        before = evaluate(q, test)
        t0 = time.perf_counter()
        hist = fit(q, train, epochs=args.epochs, lr=args.q_lr, optimizer=args.q_optimizer,
                   weight_decay=0.0, progress=False, val_loader=test, seed=1)  # fmt: skip
        after = evaluate(q, test)
        size = packed_model_bytes(q)
        runs.append({
            "method": mode,
            "layers_ternary": [r.name for r in rows],
            "top1_before_finetune": before["top1"],
            "top1": after["top1"],
            "val_top1_per_epoch": [e["val_top1"] for e in hist.epochs],
            "bytes": size["total"],
            "bytes_detail": size,
            "compression": fp_bytes / size["total"],
            "ternary_layer_compression": (
                sum(r.float_bytes for r in rows) / sum(r.packed_bytes for r in rows)
            ),
            "train_seconds": time.perf_counter() - t0,
            "scales": {n: [float(m.wp.detach()), float(m.wn.detach())] for n, m in q.named_modules()
                       if hasattr(m, "wp")},
        })  # fmt: skip
        print(f"{mode}: top1 {before['top1']:.4f} -> {after['top1']:.4f}, {size['total']} bytes")

    result = {
        "benchmark": "ternary_lenet5",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "device": str(device),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "target": "top1 >= 0.993 (TWN paper: 99.35% vs 99.41% float) [M]",
        "seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [
        "| method | top-1 | weights+params bytes | compression |",
        "|---|---|---|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['method']} | {100 * r['top1']:.2f}% | {r['bytes']} | {r['compression']:.1f}× |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
