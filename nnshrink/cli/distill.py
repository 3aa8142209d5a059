"""``nnshrink distill``: train a student from a teacher checkpoint and report teacher vs student.

Methods: ``kd`` (Hinton soft targets), ``fitnets`` (hint stage, then KD), ``at`` (attention
transfer + cross-entropy), ``sp`` (similarity preserving + cross-entropy). Feature pairs are found
automatically (last layer at each common resolution) unless ``--features s:t,...`` is given.
The report's "before" column is the teacher, "after" the distilled student.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    CLIError,
    add_data_args,
    add_json_arg,
    data_loaders,
    emit,
    example_input,
    load_model_arg,
    model_kwargs_for_data,
)

METHODS = ("kd", "fitnets", "at", "sp")


def register(subparsers) -> None:
    """Add the ``distill`` subcommand."""
    p = subparsers.add_parser(
        "distill",
        help="knowledge distillation: train a student from a teacher",
        description="Distill --teacher (checkpoint) into --student (zoo name or checkpoint).",
    )
    p.add_argument("--teacher", required=True, help="teacher checkpoint (or zoo name)")
    p.add_argument("--student", required=True, help="student zoo name or checkpoint")
    add_data_args(p)
    p.add_argument("--method", choices=METHODS, default="kd", help="distillation method")
    p.add_argument("--epochs", type=int, default=1, help="distillation epochs")
    p.add_argument("--hint-epochs", type=int, default=None, help="fitnets: hint-stage epochs")
    p.add_argument("--features", default=None, help="feature pairs 'student:teacher,...'")
    p.add_argument("--temperature", type=float, default=4.0, help="KD temperature T")
    p.add_argument("--alpha", type=float, default=None, help="soft-target weight (kd: 0.9)")
    p.add_argument("--beta", type=float, default=1000.0, help="attention-transfer weight")
    p.add_argument("--gamma", type=float, default=3000.0, help="similarity-preserving weight")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (SGD)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="student checkpoint to write (.safetensors)")
    add_latency_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def add_latency_args(p: argparse.ArgumentParser) -> None:
    """``--no-latency``, ``--latency-threads``, ``--runs`` (shared with ``nnshrink compact``)."""
    p.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    p.add_argument("--latency-threads", type=int, default=2, help="threads for latency")
    p.add_argument("--runs", type=int, default=20, help="timed runs for latency")


def measure(model, args: argparse.Namespace, loader) -> dict[str, Any]:
    """Params, MACs, size, eager latency (unless ``--no-latency``) and test accuracy."""
    from ..metrics import snapshot

    model.eval()
    try:
        return snapshot(
            model,
            example_input(args),
            loader,
            latency=not args.no_latency,
            runtimes=("eager",),
            threads=args.latency_threads,
            runs=args.runs,
        )
    except RuntimeError as exc:
        raise CLIError(f"model does not run on {args.data} inputs: {exc}") from None


def parse_features(value: str | None) -> dict[str, str] | None:
    """``"layer1:layer1,layer2:layer3"`` → ``{"layer1": "layer1", "layer2": "layer3"}``."""
    if not value:
        return None
    pairs = {}
    for item in value.split(","):
        student, sep, teacher = item.partition(":")
        if not sep or not student or not teacher:
            raise CLIError(f"--features: expected 'student:teacher' pairs, got {item!r}")
        pairs[student.strip()] = teacher.strip()
    return pairs


def run(args: argparse.Namespace) -> int:
    """Distill, measure teacher and student, save the student."""
    from ..distill import distill
    from ..io import save_checkpoint
    from ..metrics import Report

    if args.epochs < 1:
        raise CLIError("--epochs must be >= 1")
    kwargs = model_kwargs_for_data(args.data)
    teacher, _ = load_model_arg(args.teacher, **kwargs)
    student, _ = load_model_arg(args.student, **kwargs)
    train, test = data_loaders(args, seed=args.seed)
    before = measure(teacher, args, test)
    try:
        result = distill(
            teacher,
            student,
            train,
            method=args.method,
            epochs=args.epochs,
            features=parse_features(args.features),
            hint_epochs=args.hint_epochs,
            temperature=args.temperature,
            alpha=args.alpha,
            beta=args.beta,
            gamma=args.gamma,
            lr=args.lr,
            weight_decay=args.weight_decay,
            seed=args.seed,
            progress=not args.json,
        )
    except (ValueError, KeyError) as exc:
        raise CLIError(f"distill --method {args.method}: {exc}") from None
    after = measure(student, args, test)
    details = {
        "method": args.method,
        "features": result.distiller.features,
        "teacher": args.teacher,
        "student": args.student,
        "epochs": args.epochs,
        "out": args.out,
    }
    save_checkpoint(student, args.out, metrics={k: after[k] for k in ("top1", "top5", "loss")},
                    extra={"distill": details})  # fmt: skip
    details["history"] = result.history.epochs
    if result.hint_history is not None:
        details["hint_history"] = result.hint_history.epochs
    report = Report(before, after, title=f"nnshrink distill --method {args.method} "
                    f"(before = teacher, after = student)", details=details)  # fmt: skip
    emit(args, report.to_dict(), report.to_rich(), f"saved {args.out}")
    return 0
