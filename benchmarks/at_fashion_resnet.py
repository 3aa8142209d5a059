"""Attention transfer and KD on Fashion-MNIST: ResNet-56 teacher, ResNet-20 student.

Zagoruyko & Komodakis 2017 report AT on CIFAR-10 with WRN pairs (e.g. WRN-16-1 alone 8.77% error,
AT 8.25%, KD 8.39% from a WRN-40-1 teacher). We run the same recipe shape on Fashion-MNIST with
CIFAR ResNets (option-A shortcuts): the student trained alone (cross-entropy), with Hinton KD
(T = 4, alpha = 0.9), with AT on the three stage outputs (beta = 1000, plus cross-entropy) and
with AT + KD. Every student starts from the same initial weights and sees the same batches.

Usage:
    python benchmarks/at_fashion_resnet.py --limit 10000          # CPU, 2 threads, subset
    python benchmarks/at_fashion_resnet.py --device cuda --teacher-epochs 15 --epochs 15
    # teacher once, students in parallel processes (each its own --out):
    python benchmarks/at_fashion_resnet.py --device cuda --teacher-ckpt t56.safetensors --students none
    python benchmarks/at_fashion_resnet.py --device cuda --teacher-ckpt t56.safetensors --students kd
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from nnshrink import data
from nnshrink.distill import Distiller
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create
from nnshrink.train import evaluate, fit

RESULTS = Path(__file__).parent / "results" / "at_fashion_resnet.json"
STUDENTS = ("alone", "kd", "at", "at_kd")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3, help="epochs for each student")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=10000, help="first N training images (0 = all)")
    p.add_argument("--students", default=",".join(STUDENTS), help="comma list, or 'none'")
    p.add_argument(
        "--teacher-ckpt",
        type=Path,
        default=None,
        help="load the teacher from here if it exists, else train it and save it here",
    )
    p.add_argument("--test-limit", type=int, default=None, help="first N test images only")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    limit = args.limit or None
    train = data.loader("fashion-mnist", "train", args.batch_size, train=True, limit=limit)
    train = train.to(device)
    test = data.loader("fashion-mnist", "test", 1000, train=False, limit=args.test_limit).to(device)
    x = next(iter(test))[0][:2]
    result = {
        "benchmark": "AT / KD on Fashion-MNIST, ResNet-56 -> ResNet-20",
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "train_samples": train.num_samples, "torch": torch.__version__,
                     "device_name": torch.cuda.get_device_name(device)
                     if device.type == "cuda" else platform.processor() or "cpu"},
    }  # fmt: skip

    def run(name, model, epochs, **kw):
        t0 = time.perf_counter()
        fit(model, train, epochs=epochs, lr=args.lr, progress=False, seed=0, **kw)
        top1 = evaluate(model, test)["top1"]
        net = model.student if isinstance(model, Distiller) else model
        result[name] = {
            "params": count_params(net),
            "macs": count_macs(net, x[:1]),
            "test_top1": top1,
            "test_error_pct": round(100 * (1 - top1), 2),
            "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, result[name], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    if args.teacher_ckpt is not None and args.teacher_ckpt.exists():
        teacher, info = load_checkpoint(args.teacher_ckpt)
        teacher = teacher.to(device)
        top1 = evaluate(teacher, test)["top1"]
        result["teacher_resnet56"] = {
            "loaded_from": str(args.teacher_ckpt), "test_top1": top1,
            "test_error_pct": round(100 * (1 - top1), 2), "trained": info.get("metrics", {}),
        }  # fmt: skip
        print("teacher_resnet56", result["teacher_resnet56"], flush=True)
    else:
        torch.manual_seed(0)
        teacher = create("resnet56", in_channels=1).to(device)
        run("teacher_resnet56", teacher, args.teacher_epochs)
        if args.teacher_ckpt is not None:
            save_checkpoint(teacher.cpu(), args.teacher_ckpt, metrics=result["teacher_resnet56"])
            teacher = teacher.to(device)
    teacher.eval()
    torch.manual_seed(1)
    init = create("resnet20", in_channels=1).to(device)
    for name in [n for n in args.students.split(",") if n and n != "none"]:
        student = copy.deepcopy(init)
        if name == "alone":
            run("student_alone", student, args.epochs)
            continue
        method = "kd" if name == "kd" else "at"
        alpha = {"kd": 0.9, "at": 0.0, "at_kd": 0.9}[name]
        d = Distiller(teacher, student, method, example_inputs=x, temperature=4.0, alpha=alpha)
        if d.features:
            result["feature_pairs"] = d.features
        run(f"student_{name}", d, args.epochs, criterion=d.criterion)


if __name__ == "__main__":
    main()
