"""``nnshrink distill``: train a student from a teacher and report teacher vs student.

Methods: :data:`nnshrink.distill.METHODS` — ``kd`` (Hinton soft targets), ``fitnets`` (hint
stage, then KD), ``at`` (attention transfer + cross-entropy), ``sp`` (similarity preserving +
cross-entropy), ``rkd`` (relational KD), and the methods the distill package adds. Feature pairs
are found automatically (last layer at each common resolution) unless ``--features s:t,...`` is
given. The report's "before" column is the teacher, "after" the distilled student.
"""

from __future__ import annotations

import argparse

from .common import (
    CLIError,
    add_data_args,
    add_device_args,
    add_json_arg,
    add_measure_args,
    add_run_args,
    emit,
    model_spec,
    recipe_source,
    run_stages,
    stage_details,
)


def register(subparsers) -> None:
    """Add the ``distill`` subcommand."""
    from ..distill import METHODS

    p = subparsers.add_parser(
        "distill", help="knowledge distillation: train a student from a teacher",
        description="Distill --teacher into --student (each a checkpoint, zoo name, "
        "'package.module:callable' factory or hf:DIR).",
    )  # fmt: skip
    p.add_argument("--teacher", required=True, help="teacher checkpoint (or zoo name / factory)")
    p.add_argument("--student", required=True, help="student zoo name, checkpoint or factory")
    p.add_argument("--model-kwargs", type=lambda s: __import__("json").loads(s), default=None,
                   help="JSON keyword arguments for the student's factory")  # fmt: skip
    p.add_argument("--trust-code", action="store_true", help="let checkpoints import their factory")
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
    add_device_args(p)
    add_measure_args(p, runs=20)
    add_run_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


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
    """Distill through a one-stage recipe; the teacher is measured by a run of its own."""
    import tempfile
    from pathlib import Path

    from ..metrics import Report

    if args.epochs < 1:
        raise CLIError("--epochs must be >= 1")
    teacher_spec = model_spec(args, args.teacher)
    teacher_file = teacher_spec.get("checkpoint")
    stage = {"teacher": teacher_file or "baseline", "method": args.method, "epochs": args.epochs,
             "temperature": args.temperature, "alpha": args.alpha, "beta": args.beta,
             "gamma": args.gamma, "lr": args.lr, "weight_decay": args.weight_decay,
             "optimizer": "sgd", "features": parse_features(args.features) or {},
             "hint_epochs": args.hint_epochs}  # fmt: skip
    if teacher_file is None:
        raise CLIError("--teacher must be a trained model file (.safetensors or .nns)")
    with tempfile.TemporaryDirectory(prefix="nnshrink-teacher-") as tmp:
        saved = args.run_dir
        args.run_dir = tmp
        teacher = run_stages(
            args, recipe_source(args, [{"evaluate": {}}], model=teacher_spec), None
        )
        args.run_dir = saved
    details = {"method": args.method, "teacher": args.teacher, "student": args.student,
               "epochs": args.epochs, "out": args.out}  # fmt: skip
    source = recipe_source(args, [{"distill": stage}], model=model_spec(args, args.student))
    try:
        result = run_stages(args, source, args.out, {"distill": dict(details)})
    except CLIError as exc:
        raise CLIError(f"distill --method {args.method}: {exc}") from None
    recorded = stage_details(result, 0)
    details.update(features=recorded.get("features"), history=recorded.get("history"))
    if recorded.get("hint_history") is not None:
        details["hint_history"] = recorded["hint_history"]
    report = Report(teacher.rows[0], result.rows[-1], title=f"nnshrink distill --method "
                    f"{args.method} (before = teacher, after = student)", details=details)  # fmt: skip
    emit(args, report.to_dict(), report.to_rich(), f"saved {Path(args.out)}")
    return 0
