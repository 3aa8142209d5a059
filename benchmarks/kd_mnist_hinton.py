"""Hinton, Vinyals & Dean 2015 on MNIST: distil a regularized 1200-1200 MLP into an 800-800 MLP.

Paper (section 3): teacher 784-1200-1200-10 with dropout and +-2 px jitter: 67 test errors;
student 784-800-800-10 trained alone without regularization: 146 errors; the same student trained
on the teacher's soft targets at T = 20: 74 errors.

Here: teacher with dropout 0.5 on the hidden layers and +-2 px random shifts (no input dropout,
no max-norm constraint); students without regularization (no dropout, no weight decay, no
jitter); KD with T = 20 and alpha = 0.9 (soft) / 0.1 (hard). Both students get the same optimizer:
SGD + Nesterov momentum, cosine LR, gradient-norm clipping at 5 (see ``ClipGradNorm``).
Errors are counted on the 10,000 test images. The paper trains far longer than we can.

Usage:
    python benchmarks/kd_mnist_hinton.py                   # CPU, 2 threads, short
    python benchmarks/kd_mnist_hinton.py --device cuda --teacher-epochs 60 --epochs 60
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from nnshrink import data
from nnshrink.distill import Distiller
from nnshrink.metrics import count_params
from nnshrink.models import create
from nnshrink.train import Callback, evaluate, fit

RESULTS = Path(__file__).parent / "results" / "kd_mnist_hinton.json"


def device_loader(name, split, batch_size, *, train, device, limit=None, jitter=0, seed=0):
    """``data.loader`` plus the ±``jitter``-pixel random shifts of Hinton et al.'s teacher, on ``device``."""
    ds = data.load(name, split)
    mean, std = data.normalization(name)
    return data.TensorLoader(
        ds.images[:limit], ds.labels[:limit], batch_size, shuffle=train, mean=mean, std=std,
        augment_pad=jitter, seed=seed,
    ).to(device)  # fmt: skip


class ClipGradNorm(Callback):
    """Clip the gradient norm before each step.

    At T = 20 the T²-scaled soft-target gradient can be up to T times the hard-target one when
    the teacher's logits spread far more than T: without clipping, the KD student diverged within
    30 steps in our first run (teacher trained 40 epochs, lr 0.05).
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def on_after_backward(self, model) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_norm)


def test_errors(model, loader) -> tuple[int, int]:
    metrics = evaluate(model, loader)
    return round((1 - metrics["top1"]) * metrics["samples"]), metrics["samples"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--teacher-epochs", type=int, default=6)
    p.add_argument("--epochs", type=int, default=6, help="epochs for each student")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--temperature", type=float, default=20.0)
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--clip", type=float, default=5.0, help="students' gradient-norm clip")
    p.add_argument("--limit", type=int, default=None, help="first N training images only")
    p.add_argument("--test-limit", type=int, default=None, help="first N test images only")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    train = device_loader("mnist", "train", args.batch_size, train=True, device=device,
                          limit=args.limit)  # fmt: skip
    train_jitter = device_loader("mnist", "train", args.batch_size, train=True, device=device,
                                 limit=args.limit, jitter=2)  # fmt: skip
    test = device_loader("mnist", "test", 1000, train=False, device=device, limit=args.test_limit)
    result = {
        "benchmark": "Hinton et al. 2015 KD on MNIST",
        "paper": {"teacher_errors": 67, "student_alone_errors": 146, "student_kd_errors": 74},
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "torch": torch.__version__, "host": platform.node(),
                     "device_name": torch.cuda.get_device_name(device)
                     if device.type == "cuda" else platform.processor() or "cpu"},
    }  # fmt: skip

    def run(name, model, epochs, loader, lr, **kw):
        t0 = time.perf_counter()
        hist = fit(model, loader, epochs=epochs, lr=lr, progress=False, seed=0, **kw)
        errors, samples = test_errors(model, test)
        result[name] = {
            "params": count_params(model),
            "test_errors": errors,
            "test_samples": samples,
            "test_error_pct": round(100 * errors / samples, 2),
            "train_loss_last": hist.last.get("train_loss"),
            "epochs": epochs,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(name, result[name], flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    torch.manual_seed(0)
    teacher = create("mlp", widths=(1200, 1200), dropout=0.5).to(device)
    run("teacher", teacher, args.teacher_epochs, train_jitter, args.lr, weight_decay=0.0)
    torch.manual_seed(1)
    alone = create("mlp", widths=(800, 800)).to(device)
    run("student_alone", alone, args.epochs, train, args.lr, weight_decay=0.0,
        callbacks=[ClipGradNorm(args.clip)])  # fmt: skip
    torch.manual_seed(1)  # same initial student weights as the baseline
    student = create("mlp", widths=(800, 800)).to(device)
    distiller = Distiller(teacher, student, "kd", temperature=args.temperature, alpha=args.alpha)
    run("student_kd", distiller, args.epochs, train, args.lr, weight_decay=0.0,
        criterion=distiller.criterion, callbacks=[ClipGradNorm(args.clip)])  # fmt: skip


if __name__ == "__main__":
    main()
