"""``nnshrink compact``: swap a model's convs for compact blocks, retrain, report before/after.

The replaced blocks start from random weights, so the compact model is trained for ``--epochs``:
plain fine-tuning with cross-entropy, or with ``--distill`` distillation from the original model
(``--method``, default Hinton KD). The per-layer table lists each conv's parameter and MAC change
or why it was skipped.
"""

from __future__ import annotations

import argparse
import copy

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
from .distill import METHODS, add_latency_args, measure


def register(subparsers) -> None:
    """Add the ``compact`` subcommand."""
    p = subparsers.add_parser(
        "compact",
        help="replace convolutions with compact blocks (dwsep, fire, shuffle, factorized)",
        description="Replace the standard convs of CKPT with compact blocks, then fine-tune or "
        "distill from the original.",
    )
    p.add_argument("checkpoint", help="checkpoint file (or zoo model name)")
    p.add_argument("--block", required=True, choices=("dwsep", "fire", "shuffle", "factorized"))
    add_data_args(p)
    p.add_argument("--include", action="append", default=[], help="regex of conv names to replace")
    p.add_argument("--exclude", action="append", default=[], help="regex of conv names to keep")
    p.add_argument("--groups", type=int, default=4, help="shuffle: groups")
    p.add_argument("--squeeze-ratio", type=float, default=0.25, help="fire: squeeze ratio")
    p.add_argument("--keep-first", action="store_true", help="also replace the first conv")
    p.add_argument("--distill", action="store_true", help="distill from the original model")
    p.add_argument("--method", choices=METHODS, default="kd", help="distillation method")
    p.add_argument("--temperature", type=float, default=4.0, help="KD temperature T")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning / distillation epochs")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (SGD)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="compact checkpoint to write (.safetensors)")
    add_latency_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def _layer_table(result):
    from rich.table import Table

    table = Table(title=f"conv → {result.block}")
    for col in ("layer", "action", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("layer", "action") else "right")
    for r in result.layers:
        table.add_row(
            r.name,
            "replaced" if r.replaced else f"kept: {r.reason}",
            f"{r.params_before:,} → {r.params_after:,}",
            f"{r.macs_before:,} → {r.macs_after:,}",
        )
    return table


def run(args: argparse.Namespace) -> int:
    """Replace, retrain, measure, save."""
    from ..compact import CompactReplace
    from ..core import ConfigError, compress_
    from ..distill import distill
    from ..io import save_checkpoint
    from ..metrics import Report
    from ..train import fit

    if args.epochs < 0:
        raise CLIError("--epochs must be >= 0")
    try:
        config = CompactReplace(
            block=args.block,
            include=tuple(args.include),
            exclude=tuple(args.exclude),
            groups=args.groups,
            squeeze_ratio=args.squeeze_ratio,
            skip_first=not args.keep_first,
        )
    except ConfigError as exc:
        raise CLIError(str(exc)) from None
    model, _ = load_model_arg(args.checkpoint, **model_kwargs_for_data(args.data))
    train, test = data_loaders(args, seed=args.seed)
    before = measure(model, args, test)
    compact = copy.deepcopy(model)
    try:
        result = compress_(compact, config, example_inputs=example_input(args)).summary
    except (ValueError, RuntimeError) as exc:
        raise CLIError(f"compact --block {args.block}: {exc}") from None
    if not result.replaced:
        raise CLIError(
            f"no conv was replaced ({len(result.layers)} convs, reasons: "
            f"{sorted({r.reason for r in result.layers})}); adjust --include/--exclude"
        )
    train_kwargs = dict(lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
                        progress=not args.json)  # fmt: skip
    if args.epochs and args.distill:
        distill(model, compact, train, method=args.method, epochs=args.epochs,
                temperature=args.temperature, **train_kwargs)  # fmt: skip
    elif args.epochs:
        fit(compact, train, epochs=args.epochs, **train_kwargs)
    after = measure(compact, args, test)
    details = {
        "config": config.to_dict(),
        "training": ("distill-" + args.method) if args.distill else "finetune",
        "epochs": args.epochs,
        "layers": [
            {k: v for k, v in vars(r).items() if k != "output_shape"} for r in result.layers
        ],
        "out": args.out,
    }
    save_checkpoint(compact, args.out, metrics={k: after[k] for k in ("top1", "top5", "loss")},
                    extra={"compact": {k: v for k, v in details.items() if k != "layers"}})  # fmt: skip
    report = Report(before, after, title=f"nnshrink compact --block {args.block}", details=details)
    emit(args, report.to_dict(), _layer_table(result), report.to_rich(), f"saved {args.out}")
    return 0
