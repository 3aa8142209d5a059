"""``nnshrink eval``: accuracy and loss of a checkpoint (or ``.nns`` file) on a data set."""

from __future__ import annotations

import argparse

from .common import add_data_args, add_json_arg, data_loaders, emit, load_model_arg


def register(subparsers) -> None:
    """Add the ``eval`` subcommand."""
    p = subparsers.add_parser("eval", help="top-1/top-5 accuracy and loss of a model file")
    p.add_argument("checkpoint", help="checkpoint (.safetensors) or compressed model (.nns)")
    add_data_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate on the test split."""
    from ..train import evaluate

    model, _ = load_model_arg(args.checkpoint)
    _, test_loader = data_loaders(args)
    try:
        result = evaluate(model, test_loader)
    except RuntimeError as exc:
        from .common import CLIError

        raise CLIError(f"{args.checkpoint} does not run on {args.data} inputs: {exc}") from None
    emit(args, result,
         f"top-1 {100 * result['top1']:.2f}%  top-5 {100 * result['top5']:.2f}%  "
         f"loss {result['loss']:.4f}  ({result['samples']} samples)")  # fmt: skip
    return 0
