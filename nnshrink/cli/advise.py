"""``nnshrink advise``: choose compression methods for a budget and emit the recipe."""

from __future__ import annotations

import argparse
import sys

from .common import CLIError, add_json_arg, emit


def register(subparsers) -> None:
    """Add the ``advise`` subcommand."""
    from ..data import names

    p = subparsers.add_parser(
        "advise",
        help="choose compression methods for a budget (bytes, latency, MACs, accuracy drop)",
        description="Measure the trained model, generate candidate pipelines from the surveys' "
        "rules of thumb, run them under successive halving within --time-limit, and write a "
        "Pareto report and the recipe of the most accurate candidate that meets every limit.",
    )
    from .common import add_model_args

    add_model_args(p)
    p.add_argument("--data", required=True, choices=names(), help="data set")
    p.add_argument("--data-root", default=None, help="directory with the data files")
    p.add_argument("--max-bytes", default=None, help="artifact size limit, e.g. 20KB, 1.5MB")
    p.add_argument("--max-latency-ms", type=float, default=None, help="median latency limit")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the latency limit")
    p.add_argument("--threads", type=int, default=1, dest="latency_threads",
                   help="threads of the latency limit (and of the search)")  # fmt: skip
    p.add_argument("--runtime", choices=("eager", "onnxruntime"), default="onnxruntime",
                   help="runtime of the latency limit")  # fmt: skip
    p.add_argument("--max-macs", type=float, default=None, help="MACs per sample limit")
    p.add_argument("--max-drop", type=float, default=None, help="allowed top-1 drop (points)")
    p.add_argument("--time-limit", type=float, default=600.0, help="search time limit (s)")
    p.add_argument("--no-finetune", action="store_true",
                   help="no training data: PTQ, SVD/Tucker and k-means without fine-tuning")  # fmt: skip
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N validation / test samples")  # fmt: skip
    p.add_argument("--val-size", type=int, default=5000,
                   help="select on the last N training samples (held out from fine-tuning) and "
                   "report the choice on the test split; 0 selects on the test split")  # fmt: skip
    p.add_argument("--train-limit", type=int, default=None,
                   help="use at most N training samples for fine-tuning")  # fmt: skip
    p.add_argument("--no-sensitivity", action="store_true",
                   help="skip the per-layer sensitivity scan and its per-layer (*-sens) "
                   "candidates")  # fmt: skip
    p.add_argument("--train-batch-size", type=int, default=64, help="fine-tuning batch size")
    p.add_argument("--max-candidates", type=int, default=8, help="candidates in the first rung")
    p.add_argument("--seed", type=int, default=0, help="recipe seed")
    p.add_argument("--out", required=True, help="output folder")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the budget, run the advisor, print the verdict and the table."""
    from ..advise import Budget, BudgetError, advise, parse_size
    from ..data import DataNotFoundError
    from .common import load_model

    try:
        budget = Budget(
            max_bytes=None if args.max_bytes is None else parse_size(args.max_bytes),
            max_latency_ms=args.max_latency_ms, batch_size=args.batch_size,
            threads=args.latency_threads, runtime=args.runtime,
            max_macs=None if args.max_macs is None else int(args.max_macs),
            max_drop=args.max_drop, time_limit_s=args.time_limit, finetune=not args.no_finetune,
        )  # fmt: skip
        budget.require_limit()
        if args.val_size < 0:
            raise BudgetError(f"--val-size must be >= 0, got {args.val_size}")
    except BudgetError as exc:
        raise CLIError(str(exc)) from None
    model, _ = load_model(args)

    def log(line: str) -> None:
        print(f"[nnshrink advise] {line}", file=sys.stderr)

    try:
        result = advise(
            model, args.data, budget, out_dir=args.out, seed=args.seed, progress=not args.json,
            limit=args.limit, train_limit=args.train_limit, batch_size=args.train_batch_size,
            data_root=args.data_root, max_candidates=args.max_candidates,
            val_size=args.val_size, sensitivity=not args.no_sensitivity, log=log,
        )  # fmt: skip
    except (DataNotFoundError, BudgetError) as exc:
        raise CLIError(str(exc)) from None
    import json

    from rich.markdown import Markdown

    payload = json.loads(result.report_json.read_text())
    payload["report"] = str(result.report_md)
    emit(args, payload, Markdown(result.report_md.read_text()), result.message,
         f"report: {result.report_md}")  # fmt: skip
    return 0 if result.chosen is not None else 1
