"""``nnshrink decompose``: low-rank decomposition (SVD, CP, Tucker-2), optional fine-tuning, with
a before/after report and the per-layer table.

Every ``LowRank`` field is a flag (``--method``, ``--rank``, ``--energy``, ``--round-to``,
``--cp-fuse-spatial``, ``--cp-fallback``, ...). The amount can also be given the short way, which
picks the rank rule:

* ``--energy E``: keep a fraction E of the squared singular values (per channel mode for Tucker);
* ``--ratio R``: a fraction R of each layer's full rank;
* ``--rank auto``: EVBMF (Nakajima et al. 2013), as Kim et al. 2016 pick Tucker ranks;
* ``--macs-ratio M`` / ``--params-ratio P``: at most that share of each layer's MACs /
  parameters, or with ``--budget`` of all candidate layers' together.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
from .flags import add_config_flags, build_config
from .prune import add_finetune_args, finetune_stage


def register(subparsers) -> None:
    """Add the ``decompose`` subcommand."""
    from ..lowrank import LowRank

    p = subparsers.add_parser(
        "decompose", help="replace layers by low-rank factorisations (SVD, CP, Tucker-2)",
        description=__doc__.split("\n\n")[1],
    )  # fmt: skip
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--rank", dest="rank_rule", default=None,
                   help="rank rule (energy, ratio, macs, params, budget, evbmf; auto = evbmf)")  # fmt: skip
    p.add_argument("--budget", action="store_true",
                   help="with --macs-ratio / --params-ratio: one budget over all layers")  # fmt: skip
    p.add_argument("--iters", type=int, default=None, help="CP ALS / Tucker HOOI iterations")
    p.add_argument("--skip-first", action="store_true", help="leave the first conv/linear alone")
    add_config_flags(p, [LowRank], skip=("rank",))
    add_finetune_args(p)
    add_device_args(p)
    add_measure_args(p)
    add_run_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def rank_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``rank`` rule implied by the amount given (and ``--budget``)."""
    given = {k: getattr(args, f"cfg_{k}", None) for k in ("energy", "ratio", "macs_ratio",
                                                           "params_ratio")}  # fmt: skip
    if args.budget and given["macs_ratio"] is None and given["params_ratio"] is None:
        raise CLIError("--budget needs --macs-ratio or --params-ratio (the fraction of MACs or "
                       "parameters to keep overall)")  # fmt: skip
    if args.rank_rule is not None:
        return {"rank": "evbmf" if args.rank_rule == "auto" else args.rank_rule}
    if given["energy"] is not None:
        return {"rank": "energy"}
    if given["ratio"] is not None:
        return {"rank": "ratio"}
    if given["params_ratio"] is not None:
        return {"rank": "budget", "budget_on": "params"} if args.budget else {"rank": "params"}
    if given["macs_ratio"] is not None:
        return {"rank": "budget" if args.budget else "macs"}
    raise CLIError("give the amount: --energy E, --ratio R, --macs-ratio M, --params-ratio P or "
                   "--rank auto")  # fmt: skip


def _skip_first(args: argparse.Namespace) -> dict[str, Any]:
    """``--skip-first`` is ``--exclude @first`` (kept because it reads well for this command)."""
    if not args.skip_first:
        return {}
    given = tuple(getattr(args, "cfg_exclude", None) or ())
    args.cfg_exclude = None  # merged here, so the flag does not replace it
    return {"exclude": ("@first", *given)}


def run(args: argparse.Namespace) -> int:
    """Decompose (and fine-tune) through a one-stage recipe; report and save ``--out``."""
    base = rank_fields(args)
    if args.iters is not None:
        base["n_iter_max"] = args.iters
    base.update(_skip_first(args))
    config = build_config("low-rank", args, base)
    model_path = args.model_opt or args.model_ref
    stages = [{"low-rank": {k: v for k, v in config.items() if k != "type"}}]
    stages += finetune_stage(args, model_path, lr_scale=0.1)  # as measured in docs/lowrank.md
    details = {"method": config.get("method"), "config": config,
               "finetune_epochs": args.finetune_epochs, "latency_batch": args.latency_batch,
               "latency_threads": args.latency_threads, "source": model_path, "out": args.out}  # fmt: skip
    result = run_stages(args, recipe_source(args, stages), args.out, {"decompose": dict(details)})
    summary = stage_details(result, 0).get("result") or {}
    if not any(r.get("note") == "" for r in summary.get("layers", [])):
        notes = "; ".join(f"{r['name']}: {r['note']}" for r in summary.get("layers", [])[:3])
        Path(args.out).unlink(missing_ok=True)
        raise CLIError(f"no layer was decomposed (see the notes: {notes}); try a lower "
                       "--energy/--ratio/--macs-ratio or another --method")  # fmt: skip
    details["layers"] = summary
    report = report_of(result, f"nnshrink decompose --method {config.get('method')}", details)
    emit(args, report.to_dict(), report.to_rich(), _layer_table(summary), f"saved {args.out}")
    return 0


def _layer_table(summary: dict[str, Any]):
    from rich.table import Table

    table = Table(title="per-layer decomposition")
    for col in ("layer", "method", "ranks", "MACs before", "MACs after", "params before",
                "params after", "rel. error", "note"):  # fmt: skip
        table.add_column(col, justify="right" if "MACs" in col or "params" in col else "left")
    for r in summary.get("layers", []):
        error = r.get("rel_error")
        table.add_row(
            r["name"], r["method"], "x".join(map(str, r["ranks"])), f"{r['macs_before']:,}",
            f"{r['macs_after']:,}", f"{r['params_before']:,}", f"{r['params_after']:,}",
            "" if error is None else f"{error:.4f}", r["note"],
        )  # fmt: skip
    return table
