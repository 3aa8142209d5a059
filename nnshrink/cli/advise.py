"""``nnshrink advise``: choose compression methods for a budget and emit the recipe.

The model, data and metric are named as every command names them (``cli/common.py``): a
checkpoint, a zoo name or your factory ``package.module:callable``; a built-in set, your data
factory, a tensor file or ``--data-dir``; ``--metric`` / ``--loss`` references. Candidates are
compared on the data's ``val`` batches, or on a held-back part of its training data
(``--val-size`` samples of a built-in set, a ``--holdout`` fraction otherwise), never on test.
``--max-drop`` is in the metric's own units (top-1 is a fraction: 0.005 is half a point).
"""

from __future__ import annotations

import argparse
import sys

from .common import (
    CLIError,
    add_data_args,
    add_device_args,
    add_json_arg,
    add_model_args,
    data_spec,
    emit,
    model_spec,
)


def register(subparsers) -> None:
    """Add the ``advise`` subcommand."""
    p = subparsers.add_parser(
        "advise",
        help="choose compression methods for a budget (bytes, latency, MACs, metric drop)",
        description="Measure the trained model, generate candidate pipelines from the surveys' "
        "rules of thumb, run them under successive halving within --time-limit, and write a "
        "Pareto report and the recipe of the best candidate that meets every limit. "
        "Candidates are compared on the data's val batches or a held-back part of its "
        "training data, never on test.",
    )
    add_model_args(p)
    add_data_args(p, batch_size=64)
    add_device_args(p)
    budget = p.add_argument_group("budget")
    budget.add_argument("--max-bytes", default=None, help="artifact size limit, e.g. 20KB, 1.5MB")
    budget.add_argument("--max-latency-ms", type=float, default=None,
                        help="median latency limit")  # fmt: skip
    budget.add_argument("--latency-batch", type=int, default=1,
                        help="batch size of the latency limit")  # fmt: skip
    budget.add_argument("--latency-threads", type=int, default=None,
                        help="threads of the latency limit (and of the search; default 1)")  # fmt: skip
    budget.add_argument("--runtime", choices=("eager", "onnxruntime"), default="onnxruntime",
                        help="runtime of the latency limit")  # fmt: skip
    budget.add_argument("--max-macs", type=float, default=None, help="MACs per sample limit")
    budget.add_argument("--max-drop", type=float, default=None,
                        help="allowed drop of the metric, in its own units and direction "
                        "(top-1 is a fraction: 0.005 = half a point)")  # fmt: skip
    budget.add_argument("--time-limit", type=float, default=600.0, help="search time limit (s)")
    budget.add_argument("--no-finetune", action="store_true",
                        help="no training data: PTQ, SVD/Tucker and k-means without "
                        "fine-tuning")  # fmt: skip
    search = p.add_argument_group("search")
    search.add_argument("--val-size", type=int, default=5000,
                        help="a built-in set: select on its last N training samples (held out "
                        "from fine-tuning)")  # fmt: skip
    search.add_argument("--holdout", type=float, default=0.1,
                        help="data without val batches: hold back this fraction of the training "
                        "data to select on")  # fmt: skip
    search.add_argument("--no-sensitivity", action="store_true",
                        help="skip the per-layer sensitivity scan and its per-layer (*-sens) "
                        "candidates")  # fmt: skip
    search.add_argument("--epochs", type=int, default=1, help="epochs of each recovery stage")
    search.add_argument("--lr", type=float, default=1e-3, help="recovery learning rate (Adam)")
    search.add_argument("--max-candidates", type=int, default=8,
                        help="candidates in the first rung")  # fmt: skip
    search.add_argument("--seed", type=int, default=0, help="recipe seed")
    legacy = p.add_argument_group("older spellings (deprecated)")
    legacy.add_argument("--threads", type=int, default=None, dest="legacy_threads",
                        help="use --latency-threads")  # fmt: skip
    legacy.add_argument("--train-batch-size", type=int, default=None, dest="legacy_train_batch",
                        help="use --batch-size (the training batch size)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    add_json_arg(p)
    p.set_defaults(func=run)


def _threads(args: argparse.Namespace) -> int:
    from .._deprecated import warn

    if args.legacy_threads is not None:
        warn("nnshrink advise --threads", "--latency-threads", stacklevel=2)
        if args.latency_threads is None:
            return args.legacy_threads
    if args.legacy_train_batch is not None:
        warn("nnshrink advise --train-batch-size", "--batch-size", stacklevel=2)
        args.batch_size = args.legacy_train_batch
    return 1 if args.latency_threads is None else args.latency_threads


def run(args: argparse.Namespace) -> int:
    """Build the budget, run the advisor, print the verdict and the table."""
    from ..advise import Budget, BudgetError, advise, parse_size
    from ..core import ConfigError
    from ..data import DataError, DataNotFoundError
    from ..io import ArchitectureError, CheckpointError
    from ..models.factory import ModelReferenceError
    from ..utils.references import ReferenceError_

    try:
        budget = Budget(
            max_bytes=None if args.max_bytes is None else parse_size(args.max_bytes),
            max_latency_ms=args.max_latency_ms, batch_size=args.latency_batch,
            threads=_threads(args), runtime=args.runtime,
            max_macs=None if args.max_macs is None else int(args.max_macs),
            max_drop=args.max_drop, time_limit_s=args.time_limit, finetune=not args.no_finetune,
        )  # fmt: skip
        budget.require_limit()
        if not args.metric:  # top-1: a drop of 1 or more can never bind (the old "points")
            budget.check_drop_units("top1")
    except BudgetError as exc:
        raise CLIError(str(exc)) from None
    model, data = model_spec(args), data_spec(args)

    def log(line: str) -> None:
        print(f"[nnshrink advise] {line}", file=sys.stderr)

    try:
        result = advise(
            model, data, budget, out_dir=args.out, metric=args.metric, loss=args.loss,
            seed=args.seed, progress=not args.json, epochs=args.epochs, lr=args.lr,
            max_candidates=args.max_candidates, val_size=args.val_size, holdout=args.holdout,
            sensitivity=not args.no_sensitivity, device=args.device, amp=args.amp,
            batch_size=None, log=log,
        )  # fmt: skip
    except (BudgetError, ConfigError, DataError, DataNotFoundError, ArchitectureError,
            CheckpointError, ModelReferenceError, ReferenceError_) as exc:  # fmt: skip
        raise CLIError(str(exc)) from None
    import json

    from rich.markdown import Markdown

    payload = json.loads(result.report_json.read_text())
    payload["report"] = str(result.report_md)
    emit(args, payload, Markdown(result.report_md.read_text()), result.message,
         f"report: {result.report_md}")  # fmt: skip
    return 0 if result.chosen is not None else 1
