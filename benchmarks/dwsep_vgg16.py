"""VGG-16 on Fashion-MNIST with its 3x3 convs replaced by depthwise-separable blocks.

MobileNet (Howard et al. 2017) builds networks from depthwise-separable convs: ~8-9x fewer MACs
per 3x3 layer. Here we train a VGG-16-BN, replace every 3x3 conv but the stem with
``DepthwiseSeparableConv`` (depthwise 3x3 → BN → ReLU → pointwise 1x1) through
``CompactReplace``, and recover accuracy two ways from the same compact starting point:
plain fine-tuning with cross-entropy, and distillation from the original VGG-16 (Hinton KD,
T = 4, alpha = 0.9). Blocks start from random weights; BN, the stem and the classifier keep the
trained ones.

Usage:
    python benchmarks/dwsep_vgg16.py --limit 10000                 # CPU, 2 threads, subset
    python benchmarks/dwsep_vgg16.py --device cuda --teacher-epochs 10 --epochs 10 --limit 0
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from nnshrink import compress_, data
from nnshrink.compact import CompactReplace
from nnshrink.distill import Distiller
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create
from nnshrink.train import evaluate, fit

RESULTS = Path(__file__).parent / "results" / "dwsep_vgg16.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="epochs of fine-tuning / distillation")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--limit", type=int, default=10000, help="first N training images (0 = all)")
    p.add_argument("--test-limit", type=int, default=None, help="first N test images only")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    limit = args.limit or None
    train = data.loader("fashion-mnist", "train", args.batch_size, train=True, limit=limit)
    train = train.to(device)
    test = data.loader("fashion-mnist", "test", 1000, train=False, limit=args.test_limit).to(device)
    x = next(iter(test))[0][:1]
    result: dict = {
        "benchmark": "VGG-16 -> depthwise-separable VGG-16 on Fashion-MNIST",
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "train_samples": train.num_samples, "torch": torch.__version__,
                     "device_name": torch.cuda.get_device_name(device)
                     if device.type == "cuda" else platform.processor() or "cpu"},
    }  # fmt: skip

    def save():
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    def record(name, model, seconds=None, epochs=None):
        top1 = evaluate(model, test)["top1"]
        net = model.student if isinstance(model, Distiller) else model
        result[name] = {
            "params": count_params(net),
            "macs": count_macs(net, x),
            "test_top1": top1,
            "epochs": epochs,
            "seconds": None if seconds is None else round(seconds, 1),
        }
        print(name, result[name], flush=True)
        save()

    torch.manual_seed(0)
    teacher = create("vgg16", in_channels=1, input_size=28).to(device)
    t0 = time.perf_counter()
    fit(teacher, train, epochs=args.teacher_epochs, lr=args.lr, progress=False, seed=0)
    record("vgg16", teacher, time.perf_counter() - t0, args.teacher_epochs)

    compact = copy.deepcopy(teacher)
    torch.manual_seed(1)
    report = compress_(compact, CompactReplace(block="dwsep"), example_inputs=x)
    result["replace"] = {
        "replaced": report.replaced,
        "skipped": {r.name: r.reason for r in report.layers if not r.replaced},
        "params_before": report.params_before,
        "params_after": report.params_after,
        "macs_before": report.macs_before,
        "macs_after": report.macs_after,
        "param_reduction": round(report.params_before / report.params_after, 2),
        "mac_reduction": round(report.macs_before / report.macs_after, 2),
    }
    record("dwsep_no_training", compact)

    finetuned = copy.deepcopy(compact)
    t0 = time.perf_counter()
    fit(finetuned, train, epochs=args.epochs, lr=args.lr, progress=False, seed=0)
    record("dwsep_finetune", finetuned, time.perf_counter() - t0, args.epochs)

    student = copy.deepcopy(compact)
    distiller = Distiller(teacher, student, "kd", temperature=4.0, alpha=0.9)
    t0 = time.perf_counter()
    fit(distiller, train, epochs=args.epochs, lr=args.lr, progress=False, seed=0,
        criterion=distiller.criterion)  # fmt: skip
    record("dwsep_distill_kd", distiller, time.perf_counter() - t0, args.epochs)


if __name__ == "__main__":
    main()
