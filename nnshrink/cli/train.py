"""``nnshrink train``: train a model (zoo, your factory, a checkpoint) on data and save it."""

from __future__ import annotations

import argparse

from .common import (
    CLIError,
    add_data_args,
    add_device_args,
    add_json_arg,
    add_model_args,
    add_run_args,
    emit,
    recipe_source,
    run_stages,
    stage_details,
)


def register(subparsers) -> None:
    """Add the ``train`` subcommand."""
    from ..train import OPTIMIZERS, SCHEDULES

    p = subparsers.add_parser("train", help="train a model and save a checkpoint")
    add_model_args(p, positional=False)
    add_data_args(p, batch_size=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3, Adam)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--momentum", type=float, default=0.9)
    add_device_args(p)
    add_run_args(p)
    add_json_arg(p)
    p.set_defaults(func=run, no_latency=True)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test split, save."""
    from rich.table import Table

    if args.epochs < 1:
        raise CLIError("--epochs must be >= 1")
    stage = {k: getattr(args, k) for k in ("epochs", "lr", "optimizer", "schedule",
                                           "weight_decay", "momentum")}  # fmt: skip
    result = run_stages(args, recipe_source(args, [{"train": stage}]), args.out)
    final = result.rows[-1]
    history = stage_details(result, 0)["history"]
    metrics = {k: v for k, v in final.items() if k in ("top1", "top5", "loss", "samples")}
    if not result.task.is_classification:
        metrics[result.task.headline] = final.get(result.task.headline)
    payload = {**metrics, "checkpoint": str(args.out), "history": history}
    table = Table(title=f"{args.model_opt} on {args.data or args.data_dir}")
    for col in ("epoch", "train loss", "train top-1", "seconds"):
        table.add_column(col, justify="right")
    for e in history:
        top1 = "-" if e.get("train_top1") is None else f"{100 * e['train_top1']:.2f}%"
        table.add_row(str(e["epoch"]), f"{e['train_loss']:.4f}", top1, f"{e['seconds']:.1f}")
    text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    emit(args, payload, table, f"test: {text}\nsaved {args.out}")
    return 0
