"""``nnshrink prune`` and ``nnshrink sensitivity``: prune a checkpoint, or scan layer sensitivity.

Methods of ``prune``:

* ``magnitude`` / ``random`` (default unstructured): zero single weights (``MagnitudePruning``);
  the saved model has the same shapes with zeros, so ``params`` stays and ``nonzero_params`` drops;
* ``l1``, ``l2``, ``bn`` (BN scale, network slimming), ``taylor``, ``fpgm``, and ``magnitude`` (=
  ``l1``) / ``random`` with ``--structured``: remove whole channels (``StructuredPruning``); the
  layers shrink, so ``params``, ``macs`` and latency drop. ``--target-macs`` prunes until the model
  is at most that many MACs per sample;
* ``blocks``: remove whole residual blocks (``BlockPruning``, depth pruning) — ``--blocks N`` of
  them, or ``--ratio`` of the removable ones — ranked by how little they change their input on a
  training batch. For small models at batch 1, where per-layer overhead dominates the time;
* ``inputs``: remove input features (pixels) of the layer that reads the model's input
  (``InputPruning``) — ``--keep N`` of them, or drop ``--ratio`` of them — ranked by
  ``||W[:, j]|| * std(x_j)`` on 2,048 training samples. The one layer channel pruning cannot thin.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

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

METHODS = ("magnitude", "random", "l1", "l2", "bn", "taylor", "fpgm", "blocks", "inputs")
_WHOLE_MODEL = ("blocks", "inputs")  # not per-layer ratios: no sensitivity scan
_INPUT_SAMPLES = 2048
_UNSTRUCTURED = ("magnitude", "random")
_STRUCTURED_CRITERION = {"magnitude": "l1", "bn": "bn_scale"}


def register(subparsers) -> None:
    """Add the ``prune`` and ``sensitivity`` subcommands."""
    p = subparsers.add_parser("prune", help="prune weights or channels of a model, then fine-tune")
    p.add_argument("checkpoint", help="checkpoint file or zoo model name")
    add_data_args(p)
    p.add_argument("--method", required=True, choices=METHODS, help="pruning criterion")
    p.add_argument(
        "--structured",
        action="store_true",
        help="remove whole channels (implied by l1, l2, bn, taylor, fpgm)",
    )
    amount = p.add_mutually_exclusive_group(required=True)
    amount.add_argument(
        "--ratio", type=float, help="sparsity (unstructured) or fraction of channels removed"
    )
    amount.add_argument("--target-macs", type=int, help="structured: prune until MACs/sample <= N")
    amount.add_argument("--blocks", type=int, help="--method blocks: residual blocks to remove")
    amount.add_argument("--keep", type=int, help="--method inputs: input features to keep")
    p.add_argument(
        "--scope",
        choices=("layer", "global"),
        default="layer",
        help="unstructured: same sparsity per layer, or one global threshold",
    )
    p.add_argument(
        "--global-ranking", action="store_true", help="structured: rank channels across layers"
    )
    p.add_argument(
        "--round-to",
        type=int,
        default=1,
        help="structured: keep multiples of N (use 8 for ONNX Runtime: odd channel "
        "counts ran slower than the dense model there)",
    )
    p.add_argument("--ignore", nargs="*", default=[], help="layer names/regexes to leave alone")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs after")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (SGD)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="pruned checkpoint to write (.safetensors)")
    p.add_argument("--latency-threads", type=int, default=2, help="threads for latency")
    p.add_argument("--runs", type=int, default=30, help="timed runs for latency")
    add_json_arg(p)
    p.set_defaults(func=run)

    s = subparsers.add_parser(
        "sensitivity", help="prune each layer alone at several ratios and tabulate accuracy"
    )
    s.add_argument("checkpoint", help="checkpoint file or zoo model name")
    add_data_args(s)
    s.add_argument(
        "--method",
        choices=[m for m in METHODS if m not in _WHOLE_MODEL],
        default="magnitude",
        help="criterion (as for prune)",
    )
    s.add_argument("--structured", action="store_true", help="remove channels instead of weights")
    s.add_argument(
        "--ratios",
        default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        help="comma-separated ratios to try",
    )
    s.add_argument(
        "--tolerance",
        type=float,
        default=1.0,
        help="allowed top-1 drop in points when deriving per-layer ratios",
    )
    s.add_argument("--out", default=None, help="directory for sensitivity.json/.md/.png")
    add_json_arg(s)
    s.set_defaults(func=run_sensitivity)


def _is_structured(args: argparse.Namespace) -> bool:
    return bool(args.structured) or args.method not in _UNSTRUCTURED


def _build_config(args: argparse.Namespace):
    from ..core import ConfigError
    from ..pruning import BlockPruning, InputPruning, MagnitudePruning, StructuredPruning

    try:
        whole = _whole_model_config(args, "inputs", "keep", InputPruning, "keep")
        whole = whole or _whole_model_config(args, "blocks", "blocks", BlockPruning, "remove")
        if whole is not None:
            return whole
        if not _is_structured(args):
            if args.target_macs is not None:
                raise CLIError(
                    "--target-macs needs structured pruning (zeroed weights do not reduce dense "
                    "MACs); add --structured or use --ratio"
                )
            return MagnitudePruning(
                sparsity=args.ratio,
                scope=args.scope,
                criterion=args.method,
                ignore=tuple(args.ignore),
                seed=args.seed,
            )
        return StructuredPruning(
            ratio=0.5 if args.ratio is None else args.ratio,
            criterion=_STRUCTURED_CRITERION.get(args.method, args.method),
            global_ranking=args.global_ranking,
            target_macs=args.target_macs,
            round_to=args.round_to,
            ignore=tuple(args.ignore),
            seed=args.seed,
        )
    except ConfigError as exc:
        raise CLIError(str(exc)) from None


def _whole_model_config(args: argparse.Namespace, method: str, flag: str, cls, field: str):
    """``--method blocks --blocks N`` / ``--method inputs --keep N`` (or ``--ratio R``): the
    config (``--FLAG`` sets its ``field``), None for other methods, a CLIError for a flag given
    to the wrong method."""
    count = getattr(args, flag)
    if args.method != method and count is None:
        return None
    if args.method != method or args.target_macs is not None:
        raise CLIError(
            f"--{flag} goes with --method {method} (and --method {method} takes --{flag} N or "
            "--ratio R, not --target-macs)"
        )
    ratio = {} if args.ratio is None else {"ratio": args.ratio}
    return cls(**{field: count}, seed=args.seed, **ratio)


def _taylor_gradients(model: nn.Module, train, batches: int = 4) -> None:
    """Accumulate loss gradients over a few batches (the Taylor criterion scores weight x grad)."""
    model.zero_grad(set_to_none=True)
    model.eval()  # BN statistics stay as trained
    for i, (x, y) in enumerate(train):
        if i == batches:
            break
        nn.functional.cross_entropy(model(x), y).backward()


def _training_samples(train, count: int) -> torch.Tensor:
    """The first ``count`` training inputs (whole batches) as one tensor."""
    batches: list[torch.Tensor] = []
    seen = 0
    for inputs, _ in train:
        batches.append(inputs)
        seen += len(inputs)
        if seen >= count:
            break
    return torch.cat(batches)[:count]


def _measure(model: nn.Module, x: torch.Tensor, loader, args) -> dict[str, Any]:
    from ..metrics import snapshot

    return snapshot(
        model, x, loader, runtimes=("eager",), threads=args.latency_threads, runs=args.runs
    )


def run(args: argparse.Namespace) -> int:
    """Prune, fine-tune, measure before and after, save to ``--out``."""
    from ..core import compress_
    from ..io import save_checkpoint
    from ..metrics import Report
    from ..pruning import MaskCallback, make_permanent
    from ..train import fit

    if args.finetune_epochs < 0:
        raise CLIError("--finetune-epochs must be >= 0")
    config = _build_config(args)
    structured = _is_structured(args)
    model, info = load_model_arg(args.checkpoint, **model_kwargs_for_data(args.data))
    model.eval()
    train, test = data_loaders(args, seed=args.seed)
    x = example_input(args)
    try:
        before = _measure(model, x, test, args)
    except RuntimeError as exc:
        raise CLIError(f"{args.checkpoint} does not run on {args.data} inputs: {exc}") from None
    if structured and getattr(config, "criterion", None) == "taylor":
        _taylor_gradients(model, train)
    # depth and input pruning rank by what real inputs do: training samples, not zeros
    if args.method == "inputs":  # the features' spread needs many samples
        inputs = _training_samples(train, _INPUT_SAMPLES)
    elif args.method == "blocks":  # one batch ranks the blocks
        inputs = next(iter(train))[0]
    else:
        inputs = x
    try:
        summary = compress_(model, config, example_inputs=inputs).summary
    except ValueError as exc:  # e.g. no prunable layer, an unsupported module in the graph
        raise CLIError(str(exc)) from None
    model.zero_grad(set_to_none=True)
    if args.finetune_epochs:
        fit(
            model,
            train,
            epochs=args.finetune_epochs,
            lr=args.lr,
            seed=args.seed,
            callbacks=[] if structured else [MaskCallback()],
            progress=not args.json,
        )
    if not structured:
        make_permanent(model)
    model.eval()
    after = _measure(model, x, test, args)
    details = {
        "method": args.method,
        "structured": structured,
        "config": config.to_dict(),
        "summary": summary.to_dict(),
        "finetune_epochs": args.finetune_epochs,
        "source": info.get("path", args.checkpoint),
        "out": args.out,
    }
    save_checkpoint(
        model,
        args.out,
        metrics={k: after[k] for k in ("top1", "top5", "params", "nonzero_params", "macs")},
        extra={"prune": details},
    )
    title = f"nnshrink prune --method {args.method}" + (" (structured)" if structured else "")
    report = Report(before, after, title=title, details=details)
    emit(args, report.to_dict(), report.to_rich(), f"saved {args.out}")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    """Scan every conv/linear layer alone; print the table and the derived per-layer ratios."""
    from ..pruning import layer_sensitivity

    try:
        ratios = tuple(float(r) for r in args.ratios.split(",") if r.strip())
    except ValueError:
        raise CLIError(f"--ratios must be comma-separated numbers, got {args.ratios!r}") from None
    structured = _is_structured(args)
    method = _STRUCTURED_CRITERION.get(args.method, args.method) if structured else args.method
    if structured and method == "taylor":
        raise CLIError("sensitivity does not support --method taylor; use l1, l2, bn or fpgm")
    model, _ = load_model_arg(args.checkpoint, **model_kwargs_for_data(args.data))
    _, test = data_loaders(args)
    try:
        result = layer_sensitivity(
            model,
            test,
            ratios=ratios,
            method=method,
            structured=structured,
            example_inputs=example_input(args),
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    derived = result.derive_ratios(args.tolerance / 100)
    payload: dict[str, Any] = {**result.to_dict(), "derived_ratios": derived}
    payload["tolerance_pts"] = args.tolerance
    lines = [f"largest ratio within {args.tolerance} pt of dense top-1:"]
    lines += [f"  {name}: {ratio:g}" for name, ratio in derived.items()]
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sensitivity.md").write_text(result.to_markdown() + "\n\n" + "\n".join(lines) + "\n")
        result.plot(out / "sensitivity.png", ylabel=f"top-1 on {args.data} test")
        (out / "sensitivity.json").write_text(json.dumps(payload, indent=2) + "\n")
        payload["files"] = [str(out / n) for n in ("sensitivity.json", "sensitivity.md",
                                                    "sensitivity.png")]  # fmt: skip
        lines.append(f"wrote {out}/sensitivity.{{json,md,png}}")
    emit(args, payload, _sensitivity_table(result, args.data), "\n".join(lines))
    return 0


def _sensitivity_table(result, data: str):
    from rich.table import Table

    title = f"top-1 (%) on {data} with one layer pruned ({result.method})"
    table = Table(title=title)
    table.add_column("layer \\ ratio")
    for r in result.ratios:
        table.add_column(f"{r:g}", justify="right")
    table.add_row("(dense)", *[f"{100 * result.baseline:.2f}"] * len(result.ratios))
    for layer, row in result.scores.items():
        table.add_row(layer, *["n/a" if v != v else f"{100 * v:.2f}" for v in row])
    return table
