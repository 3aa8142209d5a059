"""``nnshrink train``: train a zoo model on a data set and save a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    CLIError,
    add_data_args,
    add_json_arg,
    data_loaders,
    emit,
    model_kwargs_for_data,
    print_json,
)


def register(subparsers) -> None:
    """Add the ``train`` subcommand."""
    from ..models import list_models
    from ..train import OPTIMIZERS, SCHEDULES

    p = subparsers.add_parser("train", help="train a zoo model and save a checkpoint")
    p.add_argument("--model", required=True, choices=list_models())
    add_data_args(p)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3, Adam)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="checkpoint file to write (.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run of --out")
    add_json_arg(p)
    p.set_defaults(func=run, batch_size=64)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test split, save."""
    from rich.table import Table

    from ..io import save_checkpoint
    from ..models import create
    from ..train import evaluate, fit

    if args.epochs < 1:
        raise CLIError("--epochs must be >= 1")
    train_loader, test_loader = data_loaders(args, seed=args.seed)
    model = create(args.model, **model_kwargs_for_data(args.data))
    out = Path(args.out)
    state_file = out.with_name(out.name + ".state.pt")
    history = fit(
        model,
        train_loader,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        seed=args.seed,
        checkpoint=state_file,
        resume=args.resume,
        progress=not args.json,
    )
    result = evaluate(model, test_loader)
    settings = {k: getattr(args, k) for k in ("model", "data", "epochs", "lr", "optimizer",
                                                "schedule", "weight_decay", "batch_size", "seed")}  # fmt: skip
    save_checkpoint(
        model, out, metrics=result, extra={"train": settings, "history": history.epochs}
    )
    payload = {**result, "checkpoint": str(out), "history": history.epochs}
    if args.json:
        print_json(payload)
        return 0
    table = Table(title=f"{args.model} on {args.data}")
    for col in ("epoch", "train loss", "train top-1", "seconds"):
        table.add_column(col, justify="right")
    for e in history.epochs:
        table.add_row(str(e["epoch"]), f"{e['train_loss']:.4f}", f"{100 * e['train_top1']:.2f}%",
                      f"{e['seconds']:.1f}")  # fmt: skip
    emit(args, payload, table,
         f"test top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  "
         f"loss {result['loss']:.4f}  ({result['samples']} samples)\nsaved {out}")  # fmt: skip
    return 0
