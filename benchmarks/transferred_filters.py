"""Transferred filters (CReLU, rotation-shared) put into trained models, Fashion-MNIST.

For ResNet-20 and VGG-16 (``nnshrink.models.create(..., in_channels=1)``): train a dense
teacher briefly; replace its convs with ``CompactReplace(block="crelu")`` (half the filters, the
other half their negations; convs a ReLU follows) and ``CompactReplace(block="rotation")`` (a
quarter of the filters, each used at 0/90/180/270°), both fitted to the trained filters
(``init="original"``); distill each from the dense teacher (Hinton KD, T = 4, alpha = 0.9).
Reported per variant: test top-1 right after the replacement and after distillation, params,
MACs, ONNX bytes, and eager + ONNX Runtime latency at batch 1 and 32 (dense / crelu / rotation
of one model timed in one process, interleaved in shuffled rounds, threads pinned, medians).
On ResNet-20 the same students are also distilled from random starts (``init="random"``), and
the dense teacher is distilled into a copy of itself for the same epochs (a control with the
students' training budget). Per layer we also report how well the trained filters fit the
transferred structure (mean cosine) beside random filters of the same shape.

Two phases, so that training can run at low priority and timing alone: ``--phase train``
trains, evaluates and caches the weights in ``--cache``; ``--phase latency`` loads them and adds
the timings to the same JSON (run it under ``flock /tmp/nnshrink-timing.lock`` so it never
overlaps another timing run on a shared machine). ``--phase all`` does both in one process.

Usage:
    nice -n 10 python benchmarks/transferred_filters.py --phase train   # the protocol in the JSON
    flock /tmp/nnshrink-timing.lock python benchmarks/transferred_filters.py --phase latency
    python benchmarks/transferred_filters.py --phase latency --timing-weights untrained  # no cache
    python benchmarks/transferred_filters.py --models resnet20 --limit 512 --teacher-epochs 1 \\
        --epochs 1 --test-limit 500 --out /tmp/smoke.json               # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path

import torch

from nnshrink import compress_, data
from nnshrink.binary import recalibrate_batchnorm_
from nnshrink.compact import CompactReplace, fit_crelu, fit_rotation
from nnshrink.distill import distill
from nnshrink.export import export_onnx
from nnshrink.metrics import count_macs, count_params
from nnshrink.metrics.latency import forward_call, interleaved, torch_threads
from nnshrink.models import create
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "transferred_filters.json"
# the CPU protocol: subsets and few epochs (2 shared cores); a GPU run can pass --limit 0 etc.
PROTOCOL = {
    "resnet20": {"limit": 8000, "teacher_epochs": 4, "epochs": 3, "ablation": True},
    "vgg16": {"limit": 4000, "teacher_epochs": 3, "epochs": 2, "ablation": False},
}


def per_layer_fit(model: torch.nn.Module, report, seed: int) -> list[dict]:
    """Fit cosine of each replaced conv beside a random weight of the same shape."""
    g = torch.Generator().manual_seed(seed)
    fitter = fit_crelu if report.block == "crelu" else fit_rotation
    rows = []
    for r in report.layers:
        if not r.replaced:
            continue
        shape = model.get_submodule(r.name).weight.shape
        c_out = shape[0] * (2 if report.block == "crelu" else 4)
        noise = torch.randn(c_out, *shape[1:], generator=g)
        rows.append({"layer": r.name, "fit_cosine": round(r.fit_cosine, 4),
                     "random_same_shape": round(float(fitter(noise).cosine.mean()), 4)})  # fmt: skip
    return rows


def filter_structure(model: torch.nn.Module, seed: int) -> list[dict]:
    """Per conv of the trained model: how well its filters fit ± pairs and rotation groups.

    Unrelated filters give about 0.71 (1/sqrt 2: a pair's average against one member) and 0.5
    (a group of four); the random rows show the exact floor for each shape.
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for name, conv in model.named_modules():
        if not isinstance(conv, torch.nn.Conv2d) or conv.groups != 1 or conv.kernel_size == (1, 1):
            continue
        w = conv.weight.detach()
        noise = torch.randn(w.shape, generator=g)
        row = {"layer": name, "shape": list(w.shape)}
        for block, fitter in (("crelu", fit_crelu), ("rotation", fit_rotation)):
            if w.shape[0] % (2 if block == "crelu" else 4) == 0:
                row[block] = round(float(fitter(w, scale_free=True).cosine.mean()), 4)
                row[f"{block}_random"] = round(
                    float(fitter(noise, scale_free=True).cosine.mean()), 4
                )
        rows.append(row)
    return rows


def run_model(name: str, cfg: dict, args, result: dict, save) -> dict:
    """Train, replace, distill and measure one model; returns ``{variant: model}``.

    With ``args.phase == "latency"`` every model comes from the cache and nothing is evaluated.
    """
    train_phase = args.phase != "latency"
    limit = cfg["limit"] or None
    train = data.loader("fashion-mnist", "train", args.batch_size, train=True, limit=limit,
                        seed=args.seed)  # fmt: skip
    test = data.loader("fashion-mnist", "test", 500, limit=args.test_limit)
    x1 = next(iter(test))[0][:1]
    key = hashlib.sha1(json.dumps([name, cfg, args.lr, args.student_lr, args.seed,
                                   args.batch_size]).encode()).hexdigest()[:10]  # fmt: skip
    cache = Path(args.cache) / f"{name}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    out = result.setdefault("models", {}).setdefault(name, {})
    signature = {**cfg, "teacher_lr": args.lr, "student_lr": args.student_lr,
                 "seed": args.seed, "batch_size": args.batch_size}  # fmt: skip
    if any(out.get("protocol", {}).get(k) != v for k, v in signature.items()):
        out.clear()  # results of another protocol
    out.setdefault("protocol", {}).update(cfg)
    out["protocol"].update(train_samples=train.num_samples, test_samples=test.num_samples,
                           batch_size=args.batch_size, teacher_lr=args.lr,
                           student_lr=args.student_lr, kd_temperature=4.0, kd_alpha=0.9,
                           optimizer="SGD momentum 0.9, wd 5e-4, cosine", seed=args.seed)  # fmt: skip

    untrained: list[str] = []  # tags timed with initial weights (--timing-weights untrained)

    def trained(tag: str, model: torch.nn.Module, train_fn) -> float | None:
        path = cache / f"{tag}.pt"
        if path.exists():
            model.load_state_dict(torch.load(path, weights_only=True))
            return None
        if not train_phase:
            if args.timing_weights == "untrained":  # timing only: same graph, same shapes
                untrained.append(tag)
                return None
            raise SystemExit(
                f"{path} is missing: run --phase train with the same settings first (or time "
                "the same architectures untrained with --timing-weights untrained)"
            )
        t0 = time.perf_counter()
        with torch_threads(args.train_threads):
            train_fn()
        torch.save(model.state_dict(), path)
        return round(time.perf_counter() - t0, 1)

    previous = dict(out)

    def record(tag: str, model: torch.nn.Module, recalibrate: bool = False, **extra) -> None:
        if not train_phase:
            return
        if extra.get("train_seconds") is None and previous.get(tag, {}).get("train_seconds"):
            extra["train_seconds"] = previous[tag]["train_seconds"]  # trained by an earlier run
        with torch_threads(args.train_threads):
            top1 = evaluate(model, test)["top1"]
            if recalibrate:  # BN statistics of the new filters, from 20 training batches
                calibrated = copy.deepcopy(model)
                recalibrate_batchnorm_(calibrated, train, max_batches=20)
                extra["test_top1_bn_recalibrated"] = evaluate(calibrated, test)["top1"]
        out[tag] = {"test_top1": top1, "params": count_params(model),
                    "macs": count_macs(model, x1), **extra}  # fmt: skip
        print(name, tag, out[tag], flush=True)
        save()

    torch.manual_seed(args.seed)
    teacher = create(name, in_channels=1, input_size=28)
    seconds = trained(
        "teacher",
        teacher,
        lambda: fit(
            teacher, train, epochs=cfg["teacher_epochs"], lr=args.lr, seed=args.seed, progress=False
        ),
    )
    record("dense", teacher, train_seconds=seconds, epochs=cfg["teacher_epochs"])
    teacher.eval()
    if train_phase:
        out["filter_structure"] = filter_structure(teacher, args.seed)
    variants = {"dense": teacher}
    inits = ("original", "random") if cfg["ablation"] else ("original",)
    for block in ("crelu", "rotation"):
        for init in inits:
            tag = block if init == "original" else f"{block}_random_init"
            student = copy.deepcopy(teacher)
            torch.manual_seed(args.seed + 1)
            report = compress_(student, CompactReplace(block=block, init=init),
                               example_inputs=x1).summary  # fmt: skip
            summary = {"replaced": len(report.replaced),
                       "skipped": {r.name: r.reason for r in report.layers if not r.replaced},
                       "params_before": report.params_before, "params_after": report.params_after,
                       "macs_before": report.macs_before, "macs_after": report.macs_after}  # fmt: skip
            if init == "original":
                summary["per_layer_fit"] = per_layer_fit(student, report, args.seed)
                summary["notes"] = sorted({r.notes for r in report.layers if r.replaced})
            if train_phase:
                out[f"{tag}_replace"] = summary
            record(f"{tag}_before_training", student, recalibrate=True)
            seconds = trained(tag, student, lambda s=student: distill(
                teacher, s, train, method="kd", epochs=cfg["epochs"], temperature=4.0,
                alpha=0.9, lr=args.student_lr, seed=args.seed, progress=False))  # fmt: skip
            record(tag, student, train_seconds=seconds, epochs=cfg["epochs"])
            if init == "original":
                variants[block] = student.eval()
    if cfg["ablation"]:
        control = copy.deepcopy(teacher)
        seconds = trained("dense_self_distilled", control, lambda: distill(
            teacher, control, train, method="kd", epochs=cfg["epochs"], temperature=4.0,
            alpha=0.9, lr=args.student_lr, seed=args.seed, progress=False))  # fmt: skip
        record("dense_self_distilled", control, train_seconds=seconds, epochs=cfg["epochs"])
    if not train_phase:
        out.setdefault("latency", {})["weights"] = (
            f"untrained {sorted(untrained)} (no trained cache on this machine; dense fp32 "
            "kernels do not depend on the weights' values, so the timing is the trained "
            "models' too)"
            if untrained
            else "trained (from the cache)"
        )
    return variants


def time_variants(name: str, variants: dict, args, result: dict, save) -> None:
    """Eager and ONNX Runtime latency at batch 1 and 32, interleaved, threads pinned."""
    out = result["models"][name].setdefault("latency", {})
    out["threads"] = args.threads
    # a shared machine: the load around the timing says how much to trust it
    out["load_average_before"] = [round(v, 2) for v in os.getloadavg()]
    for batch, runs in ((1, args.runs), (32, max(2, args.runs // 8))):
        x = torch.randn(batch, 1, 28, 28)
        fns = {}
        for tag, model in variants.items():
            onnx_bytes = export_onnx(model, x)
            result["models"][name][tag]["onnx_bytes"] = len(onnx_bytes)
            fns[f"onnxruntime:{tag}"] = forward_call(model, x, runtime="onnxruntime",
                                                     threads=args.threads, onnx_bytes=onnx_bytes,
                                                     stop_spinning=True)  # fmt: skip

            def eager(m=model, x=x):
                with torch_threads(args.threads), torch.inference_mode():
                    m(x)

            fns[f"eager:{tag}"] = eager
        for runtime in ("onnxruntime", "eager"):  # one runtime at a time (ORT threads linger)
            group = {k: f for k, f in fns.items() if k.startswith(runtime)}
            stats = interleaved(group, rounds=args.rounds, runs=runs, seed=args.seed)
            rows = out.setdefault(f"{runtime}_b{batch}", {})
            for key, value in stats.items():
                rows[key.split(":", 1)[1]] = {"median_ms": round(value["median"], 4),
                                              "p10_ms": round(value["p10"], 4)}  # fmt: skip
            for row in rows.values():
                row["speedup_vs_dense"] = round(rows["dense"]["median_ms"] / row["median_ms"], 3)
        out["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        print(name, f"b{batch}", json.dumps({k: v for k, v in out.items() if k.endswith(
            f"b{batch}")}), flush=True)  # fmt: skip
        save()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20,vgg16")
    p.add_argument("--limit", type=int, default=None, help="training images (0 = all)")
    p.add_argument("--teacher-epochs", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="distillation epochs")
    p.add_argument("--test-limit", type=int, default=None, help="first N test images only")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05, help="teacher peak LR")
    p.add_argument("--student-lr", type=float, default=0.02, help="distillation peak LR")
    p.add_argument("--threads", type=int, default=2, help="threads for the timing")
    p.add_argument(
        "--train-threads",
        type=int,
        default=1,
        help="threads for training (1 is faster than 2 on a contended machine)",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=24, help="timed calls per round at batch 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default="/tmp/nnshrink-transferred-cache")
    p.add_argument("--phase", choices=("all", "train", "latency"), default="all")
    p.add_argument(
        "--timing-weights",
        choices=("trained", "untrained"),
        default="trained",
        help="--phase latency without the training cache: 'untrained' times the same "
        "architectures with their initial weights",
    )
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result: dict = {
        "models": previous.get("models", {}),
        "benchmark": "transferred filters (CReLU, rotation) via CompactReplace, Fashion-MNIST",
        "environment": environment(args.seed),
        "train_environment": previous.get("train_environment")
        if args.phase == "latency"
        else environment(args.seed),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_args": previous.get("train_args") if args.phase == "latency" else None,
        "papers": {
            "crelu": "Shang et al. 2016 (ICML): CReLU in the lower conv layers of CIFAR-10/100 "
            "and ImageNet nets, better accuracy with fewer parameters (half the filters).",
            "rotation": "Cohen & Welling 2016 (ICML): p4-CNN on rotated MNIST 2.28% test error "
            "vs 5.03% for the CNN; CIFAR-10 P4-All-CNN-C vs All-CNN-C (figures as quoted in "
            "the project brief, not re-verified here).",
        },
    }

    if result["train_args"] is None:
        result["train_args"] = result["args"]

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")

    for name in args.models.split(","):
        cfg = dict(PROTOCOL[name])
        for key in ("limit", "teacher_epochs", "epochs"):
            if getattr(args, key) is not None:
                cfg[key] = getattr(args, key)
        variants = run_model(name, cfg, args, result, save)
        if args.phase != "train":
            time_variants(name, variants, args, result, save)
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
