"""``nnshrink decompose``: low-rank decomposition of a checkpoint (SVD, CP, Tucker-2), then
optional fine-tuning, with a before/after report and the per-layer table.

Rank choices (one of):

* ``--energy E``: keep a fraction E of the squared singular values (per channel mode for Tucker);
* ``--ratio R``: a fraction R of each layer's full rank;
* ``--rank auto``: EVBMF (Nakajima et al. 2013), as Kim et al. 2016 pick Tucker ranks;
* ``--macs-ratio M``: at most M of each layer's MACs, or with ``--budget`` of all candidate
  layers' MACs together (ranks allocated greedily by error per MAC saved).
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


def register(subparsers) -> None:
    """Add the ``decompose`` subcommand."""
    p = subparsers.add_parser(
        "decompose", help="replace layers by low-rank factorisations (SVD, CP, Tucker-2)"
    )
    p.add_argument("checkpoint", help="checkpoint file or zoo model name")
    add_data_args(p)
    p.add_argument(
        "--method",
        required=True,
        choices=("svd", "cp", "tucker"),
        help="svd: Linear layers; cp / tucker: Conv2d layers",
    )
    rank = p.add_mutually_exclusive_group(required=True)
    rank.add_argument("--energy", type=float, help="kept fraction of the squared spectrum")
    rank.add_argument("--ratio", type=float, help="fraction of each layer's full rank")
    rank.add_argument("--rank", choices=("auto",), help="auto: EVBMF rank selection")
    rank.add_argument("--macs-ratio", type=float, help="fraction of MACs kept per layer")
    rank.add_argument("--params-ratio", type=float, help="fraction of parameters kept per layer")
    p.add_argument(
        "--budget",
        action="store_true",
        help="with --macs-ratio / --params-ratio: one budget over all layers",
    )
    p.add_argument("--linear", action="store_true", help="cp/tucker: also SVD the Linear layers")
    p.add_argument("--layers", nargs="*", default=[], help="decompose only these submodules")
    p.add_argument("--skip-first", action="store_true", help="leave the first conv/linear alone")
    p.add_argument("--iters", type=int, default=50, help="CP ALS / Tucker HOOI iterations")
    p.add_argument(
        "--round-to",
        type=int,
        default=1,
        help="ranks in multiples of N (16 on AVX-512, 8 on AVX2 for ONNX Runtime: odd ranks "
        "made the Tucker VGG-16 slower than the dense model there)",
    )
    p.add_argument(
        "--cp-fuse-spatial",
        action="store_true",
        help="cp: one kxk depthwise conv instead of kx1 + 1xk (three convs per layer, exact, "
        "faster on CPUs)",
    )
    p.add_argument(
        "--cp-fallback",
        action="store_true",
        help="tucker: decompose by CP the convs no Tucker-2 shape makes cheaper (e.g. "
        "16-channel convs with --round-to 16) instead of leaving them dense",
    )
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs after")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (SGD)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="decomposed checkpoint to write (.safetensors)")
    p.add_argument("--latency-threads", type=int, default=2, help="threads for latency")
    p.add_argument(
        "--latency-batch",
        type=int,
        default=1,
        help="batch size of the latency runs (decompositions pay off at larger batches: "
        "see docs/lowrank.md)",
    )
    p.add_argument("--runs", type=int, default=30, help="timed runs for latency")
    add_json_arg(p)
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The ``LowRank`` config the arguments describe (errors become :class:`CLIError`)."""
    from ..core import ConfigError
    from ..lowrank import LowRank

    if args.budget and args.macs_ratio is None and args.params_ratio is None:
        raise CLIError(
            "--budget needs --macs-ratio or --params-ratio (the fraction of MACs or parameters "
            "to keep overall)"
        )
    if args.energy is not None:
        fields: dict[str, Any] = {"rank": "energy", "energy": args.energy}
    elif args.ratio is not None:
        fields = {"rank": "ratio", "ratio": args.ratio}
    elif args.rank == "auto":
        fields = {"rank": "evbmf"}
    elif args.params_ratio is not None:
        fields = {"rank": "budget", "budget_on": "params"} if args.budget else {"rank": "params"}
        fields["params_ratio"] = args.params_ratio
    else:
        fields = {"rank": "budget" if args.budget else "macs", "macs_ratio": args.macs_ratio}
    try:
        return LowRank(
            method=args.method, linear=args.linear, layers=tuple(args.layers),
            n_iter_max=args.iters, seed=args.seed, round_to=args.round_to,
            cp_fuse_spatial=args.cp_fuse_spatial, cp_fallback=args.cp_fallback, **fields,
        )  # fmt: skip
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def _layer_table(report):
    from rich.table import Table

    table = Table(title="per-layer decomposition")
    for col in ("layer", "method", "ranks", "MACs before", "MACs after", "params before",
                "params after", "rel. error", "note"):  # fmt: skip
        table.add_column(col, justify="right" if "MACs" in col or "params" in col else "left")
    for r in report.rows:
        table.add_row(
            r.name, r.method, "x".join(map(str, r.ranks)), f"{r.macs_before:,}",
            f"{r.macs_after:,}", f"{r.params_before:,}", f"{r.params_after:,}",
            "" if r.rel_error is None else f"{r.rel_error:.4f}", r.note,
        )  # fmt: skip
    return table


def run(args: argparse.Namespace) -> int:
    """Decompose, fine-tune, measure before and after, save to ``--out``."""
    from ..core import compress_
    from ..io import save_checkpoint
    from ..metrics import Report, snapshot
    from ..train import fit

    if args.finetune_epochs < 0:
        raise CLIError("--finetune-epochs must be >= 0")
    if args.latency_batch < 1:
        raise CLIError("--latency-batch must be >= 1")
    config = build_config(args)
    model, info = load_model_arg(args.checkpoint, **model_kwargs_for_data(args.data))
    model.eval()
    train, test = data_loaders(args, seed=args.seed)
    x = example_input(args)
    # MACs are reported per sample, so the batch only changes what the latency runs see
    x_latency = example_input(args, batch=args.latency_batch)

    def measure():
        return snapshot(model, x_latency, test, runtimes=("eager", "onnxruntime"),
                        threads=args.latency_threads, runs=args.runs)  # fmt: skip

    try:
        before = measure()
    except RuntimeError as exc:
        raise CLIError(f"{args.checkpoint} does not run on {args.data} inputs: {exc}") from None
    filter_fn = None
    if args.skip_first:
        from torch import nn

        first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)),
                     None)  # fmt: skip
        filter_fn = lambda m, n: n != first  # noqa: E731
    try:
        summary = compress_(model, config, example_inputs=x, filter_fn=filter_fn).summary
    except ValueError as exc:  # ConfigError included: unsupported layer named, bad layer name
        raise CLIError(str(exc)) from None
    if not summary.decomposed:
        raise CLIError(
            "no layer was decomposed (see the notes: "
            + "; ".join(f"{r.name}: {r.note}" for r in summary.skipped[:3])
            + "); try a lower --energy/--ratio/--macs-ratio or another --method"
        )
    if args.finetune_epochs:
        fit(model, train, epochs=args.finetune_epochs, lr=args.lr, seed=args.seed,
            progress=not args.json)  # fmt: skip
    model.eval()
    after = measure()
    details = {
        "method": args.method,
        "config": config.to_dict(),
        "layers": summary.to_dict(),
        "finetune_epochs": args.finetune_epochs,
        "latency_batch": args.latency_batch,
        "latency_threads": args.latency_threads,
        "source": info.get("path", args.checkpoint),
        "out": args.out,
    }
    save_checkpoint(
        model,
        args.out,
        metrics={k: after.get(k) for k in ("top1", "top5", "params", "macs")},
        extra={"decompose": details},
    )
    report = Report(before, after, title=f"nnshrink decompose --method {args.method}",
                    details=details)  # fmt: skip
    emit(args, report.to_dict(), report.to_rich(), _layer_table(summary), f"saved {args.out}")
    return 0
