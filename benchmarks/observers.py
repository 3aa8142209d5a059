"""Calibration observers compared: top-1 of a PTQ ResNet-20 at 8 and 6 bits, per observer.

Model: ResNet-20 (1x28x28) trained briefly on a Fashion-MNIST subset (reuses the model saved by
benchmarks/int8_resnet20.py when present, else trains one). PTQ with the ``fake`` backend (weights
per-channel symmetric, activations unsigned affine, both at the given bit width), calibrated on
``--calib-batches`` training batches of 64; top-1 on the first ``--test-limit`` test images.

Run:  .venv/bin/python benchmarks/observers.py
Writes benchmarks/results/observers.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from nnshrink import data, models
from nnshrink.quantization.ptq import PTQ, iter_inputs, quantize_ptq
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"
CKPT = Path("/tmp/nnshrink_resnet20_fmnist.pt")
OBSERVERS = ("minmax", "moving_average", "percentile", "mse", "kl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=10000, help="training samples (if training)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--calib-batches", type=int, default=8)
    p.add_argument("--bits", type=int, nargs="+", default=[8, 6])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None, help="Fashion-MNIST directory (default location)")
    args = p.parse_args()
    torch.manual_seed(0)  # initial weights too: reproducible runs
    torch.set_num_threads(args.threads)
    model = models.create("resnet20", in_channels=1, input_size=28)
    if CKPT.exists():
        model.load_state_dict(torch.load(CKPT))
        trained = f"loaded {CKPT}"
    else:
        train = data.loader(
            "fashion-mnist", "train", 128, train=True, limit=args.limit, root=args.data_root
        )
        fit(model, train, epochs=args.epochs, lr=0.1, progress=False)
        torch.save(model.state_dict(), CKPT)
        trained = f"trained {args.epochs} epochs on {args.limit} samples"
    model.eval()
    test = data.loader("fashion-mnist", "test", 500, limit=args.test_limit, root=args.data_root)
    calib = iter_inputs(
        data.loader(
            "fashion-mnist", "train", 64, limit=64 * args.calib_batches, root=args.data_root
        ),
        args.calib_batches,
    )
    fp32 = evaluate(model, test)["top1"]
    print(f"fp32 top-1 {fp32:.4f}")
    rows = []
    for bits in args.bits:
        for observer in OBSERVERS:
            t0 = time.time()
            cfg = PTQ(bits=bits, observer=observer, backend="fake")
            q = quantize_ptq(copy.deepcopy(model), cfg, calib).model
            seconds = time.time() - t0
            top1 = evaluate(q, test)["top1"]
            rows.append(
                {
                    "bits": bits,
                    "observer": observer,
                    "top1": top1,
                    "drop_points": round(100 * (fp32 - top1), 2),
                    "calibrate_convert_s": round(seconds, 2),
                }
            )
            print(rows[-1])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "machine": environment(),
        "model": "resnet20 (fashion-mnist)",
        "model_source": trained,
        "fp32_top1": fp32,
        "setup": vars(args),
        "rows": rows,
    }
    (RESULTS / "observers.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
