"""``nnshrink deep-compress``: prune → share → Huffman → ``.nns`` with the paper-style report."""

from __future__ import annotations

import argparse
import json

from .common import (
    CLIError,
    add_data_args,
    add_json_arg,
    add_model_args,
    emit,
    load_model,
    open_data_args,
)


def register(subparsers) -> None:
    """Add the ``deep-compress`` subcommand."""
    p = subparsers.add_parser(
        "deep-compress",
        help="Deep Compression: iterative pruning, k-means sharing, Huffman, .nns file",
    )
    add_model_args(p)
    add_data_args(p, batch_size=64)
    p.add_argument("--out", required=True, help="the .nns file to write")
    p.add_argument("--sparsity", type=float, default=0.92, help="final pruned fraction")
    p.add_argument(
        "--per-layer",
        default="{}",
        help="JSON {regex: sparsity}, e.g. '{\"5\": 0.74}' for a lighter last layer",
    )
    p.add_argument("--prune-rounds", type=int, default=3)
    p.add_argument("--retrain-epochs", type=int, default=2)
    p.add_argument(
        "--final-epochs",
        type=int,
        default=None,
        help="retraining epochs of the last round (default: --retrain-epochs)",
    )
    p.add_argument(
        "--optimizer",
        choices=["adam", "sgd"],
        default="adam",
        help="retraining optimizer (sgd: Nesterov momentum 0.9)",
    )
    p.add_argument("--weight-decay", type=float, default=0.0, help="during retraining")
    p.add_argument("--conv-bits", type=int, default=8)
    p.add_argument("--fc-bits", type=int, default=5)
    p.add_argument("--share-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the pipeline and print the report."""
    from ..core import ConfigError
    from ..pipelines import DeepCompression, deep_compress

    try:
        per_layer = json.loads(args.per_layer)
        config = DeepCompression(
            sparsity=args.sparsity, per_layer=per_layer, prune_rounds=args.prune_rounds,
            retrain_epochs=args.retrain_epochs, conv_bits=args.conv_bits, fc_bits=args.fc_bits,
            share_epochs=args.share_epochs, lr=args.lr, final_epochs=args.final_epochs,
            optimizer=args.optimizer, weight_decay=args.weight_decay,
        )  # fmt: skip
    except (ConfigError, json.JSONDecodeError) as exc:
        raise CLIError(str(exc)) from None
    data = open_data_args(args)
    model, _ = load_model(args, data=data)
    train_loader, test_loader = data.train, data.test
    quiet = args.json

    def log(line: str) -> None:
        if not quiet:
            print(line)

    result = deep_compress(model, train_loader, test_loader, args.out, config, seed=args.seed,
                           progress=not quiet, log=log)  # fmt: skip
    from rich.markdown import Markdown

    summary = (
        f"file {result.file_bytes:,} bytes vs dense fp32 {result.dense_bytes:,}: "
        f"{result.compression_ratio:.1f}x on disk ({result.paper_ratio:.1f}x counted as in the "
        f"paper, without the container header); top-1 {100 * result.stages[0]['top1']:.2f}% -> "
        f"{100 * result.stages[-1]['top1']:.2f}%"
    )
    emit(args, result.to_dict(), Markdown(result.to_markdown()), summary)
    return 0
