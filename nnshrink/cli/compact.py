"""``nnshrink compact``: swap a model's convs for compact blocks, retrain, report before/after.

Every ``CompactReplace`` field is a flag (``--block``, ``--include``, ``--exclude``,
``--groups``, ...). The replaced blocks start near the original layers, so the compact model is
trained for ``--epochs``: plain fine-tuning, or with ``--distill`` distillation from the original
model (``--distill-method``, default Hinton KD). The per-layer table lists each conv's parameter
and MAC change or why it was kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    CLIError,
    add_data_args,
    add_device_args,
    add_json_arg,
    add_measure_args,
    add_model_args,
    add_run_args,
    emit,
    recipe_source,
    report_of,
    run_stages,
    stage_details,
)
from .flags import add_config_flags, build_config, family


def register(subparsers) -> None:
    """Add the ``compact`` subcommand."""
    from ..distill import METHODS

    p = subparsers.add_parser(
        "compact", help="replace convolutions with compact or transferred-filter blocks",
        description=__doc__.split("\n\n")[1],
    )  # fmt: skip
    add_model_args(p)
    add_data_args(p)
    add_config_flags(p, family("nnshrink.compact"))
    p.add_argument("--keep-first", action="store_true", help="also replace the first conv")
    p.add_argument("--distill", action="store_true", help="distill from the original model")
    p.add_argument("--distill-method", "--method", dest="distill_method", choices=METHODS,
                   default="kd", help="distillation method")  # fmt: skip
    p.add_argument("--temperature", type=float, default=4.0, help="KD temperature T")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning / distillation epochs")
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate (SGD)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    add_device_args(p)
    add_measure_args(p, runs=20)
    add_run_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replace, retrain (fine-tune or distil), measure, save."""
    from ..compact import CompactReplace

    if args.epochs < 0:
        raise CLIError("--epochs must be >= 0")
    fields = set(CompactReplace.__dataclass_fields__)
    base = {}
    if args.keep_first:
        base.update({"skip_first": False} if "skip_first" in fields else {"exclude": ()})
    config = build_config("compact", args, base)
    stages = [{"compact": {k: v for k, v in config.items() if k != "type"}}]
    training = {"epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay,
                "optimizer": "sgd"}  # fmt: skip
    if args.epochs and args.distill:
        stages.append({"distill": {**training, "method": args.distill_method,
                                   "temperature": args.temperature}})  # fmt: skip
    elif args.epochs:
        stages.append({"finetune": training})
    details = {"config": config, "epochs": args.epochs, "out": args.out,
               "training": ("distill-" + args.distill_method) if args.distill else "finetune"}  # fmt: skip
    result = run_stages(args, recipe_source(args, stages), args.out, {"compact": dict(details)})
    summary = stage_details(result, 0).get("result") or {}
    layers = [
        {k: v for k, v in r.items() if k != "output_shape"} for r in summary.get("layers", [])
    ]
    if not any(r.get("replaced") for r in layers):
        Path(args.out).unlink(missing_ok=True)
        raise CLIError(f"no conv was replaced ({len(layers)} convs, reasons: "
                       f"{sorted({r.get('reason') for r in layers})}); adjust --include/--exclude")  # fmt: skip
    details["layers"] = layers
    report = report_of(result, f"nnshrink compact --block {config.get('block')}", details)
    emit(args, report.to_dict(), _layer_table(config.get("block"), layers), report.to_rich(),
         f"saved {args.out}")  # fmt: skip
    return 0


def _layer_table(block: str, layers):
    from rich.table import Table

    table = Table(title=f"conv → {block}")
    for col in ("layer", "action", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("layer", "action") else "right")
    for r in layers:
        table.add_row(
            r["name"], "replaced" if r["replaced"] else f"kept: {r['reason']}",
            f"{r['params_before']:,} → {r['params_after']:,}",
            f"{r['macs_before']:,} → {r['macs_after']:,}",
        )  # fmt: skip
    return table
