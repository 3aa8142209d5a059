"""``nnshrink prune`` and ``nnshrink sensitivity``: prune a model, or scan layer sensitivity.

``--method`` is a pruning technique's kind (``magnitude-pruning``, ``structured-pruning``,
``block-pruning``, ``input-pruning``, and any other registered pruning config) and every field
of its config is a flag (``--sparsity``, ``--criterion``, ``--scope``, ``--round-to``,
``--exclude``, ...). The older spellings keep working, with a deprecation warning:

* ``--method magnitude|random`` = ``magnitude-pruning`` with that criterion (with
  ``--structured``: ``structured-pruning`` by l1 / random);
* ``--method l1|l2|bn|taylor|fpgm`` = ``structured-pruning --criterion ...`` (``bn``:
  ``bn_scale``);
* ``--method blocks --blocks N`` = ``block-pruning`` removing N residual blocks;
* ``--method inputs --keep N`` = ``input-pruning`` keeping N input features;
* ``--ratio`` = the amount (``--sparsity``), ``--ignore`` = ``--exclude``, ``--global-ranking`` =
  ``--scope global``.

The command runs a one-stage recipe (prune, then ``--finetune-epochs`` of fine-tuning with the
optimizer the model was trained with) and writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
import warnings
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
    load_model,
    open_data_args,
    recipe_source,
    report_of,
    run_stages,
    stage_details,
)
from .flags import add_config_flags, build_config, family

LEGACY_METHODS = ("magnitude", "random", "l1", "l2", "bn", "taylor", "fpgm", "blocks", "inputs")
_LEGACY_STRUCTURED = {"magnitude": "l1", "bn": "bn_scale"}


def register(subparsers) -> None:
    """Add the ``prune`` and ``sensitivity`` subcommands."""
    kinds = sorted(cls.kind for cls in family("nnshrink.pruning"))
    p = subparsers.add_parser(
        "prune", help="prune weights, channels, heads, blocks or input features, then fine-tune",
        description=__doc__.split("\n\n")[1],
    )  # fmt: skip
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--method", required=True, choices=(*kinds, *LEGACY_METHODS),
                   help="the pruning technique (config kind)")  # fmt: skip
    legacy = p.add_argument_group("older spellings (deprecated)")
    legacy.add_argument("--ratio", dest="legacy_ratio", type=float, default=None,
                        help="the amount (use --sparsity)")  # fmt: skip
    legacy.add_argument("--structured", action="store_true",
                        help="with --method magnitude/random: remove whole channels")  # fmt: skip
    legacy.add_argument("--blocks", dest="legacy_blocks", type=int, default=None,
                        help="--method blocks: residual blocks to remove (use --remove)")  # fmt: skip
    legacy.add_argument("--keep", dest="legacy_keep", type=int, default=None,
                        help="--method inputs: input features to keep")  # fmt: skip
    legacy.add_argument("--ignore", dest="legacy_ignore", nargs="*", default=None,
                        help="layers to leave alone (use --exclude)")  # fmt: skip
    legacy.add_argument("--global-ranking", dest="legacy_global", action="store_true",
                        help="rank channels across layers (use --scope global)")  # fmt: skip
    add_config_flags(p, family("nnshrink.pruning"))
    add_finetune_args(p)
    add_device_args(p)
    add_measure_args(p)
    add_run_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)

    s = subparsers.add_parser(
        "sensitivity", help="prune each layer alone at several ratios and tabulate accuracy"
    )
    add_model_args(s)
    add_data_args(s)
    s.add_argument("--method", choices=[m for m in LEGACY_METHODS if m not in ("blocks", "inputs")],
                   default="magnitude", help="criterion (as for prune)")  # fmt: skip
    s.add_argument("--structured", action="store_true", help="remove channels instead of weights")
    s.add_argument("--ratios", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                   help="comma-separated ratios to try")  # fmt: skip
    s.add_argument("--tolerance", type=float, default=1.0,
                   help="allowed top-1 drop in points when deriving per-layer ratios")  # fmt: skip
    s.add_argument("--out", default=None, help="directory for sensitivity.json/.md/.png")
    add_json_arg(s)
    s.set_defaults(func=run_sensitivity)


def add_finetune_args(
    p: argparse.ArgumentParser, epochs: int = 0, flag: str = "--finetune-epochs"
) -> None:
    """``--finetune-epochs``, ``--lr``, ``--optimizer`` (default: what the model was trained with)."""
    p.add_argument(flag, dest="finetune_epochs", type=int, default=epochs,
                   help="fine-tuning epochs after the technique")  # fmt: skip
    p.add_argument("--lr", type=float, default=None,
                   help="fine-tuning learning rate (default: a tenth of the training LR, as Han "
                   "et al. retrain; 2e-4 when unknown)")  # fmt: skip
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                   help="fine-tuning optimizer (default: the one the model was trained with)")  # fmt: skip


def finetune_stage(
    args: argparse.Namespace, model_path: str | None, lr_scale: float | None = None
) -> list[dict[str, Any]]:
    """The ``finetune`` stage for ``--finetune-epochs`` (empty list for 0).

    ``lr_scale`` fixes the default LR as that fraction of the training LR (``None``: the
    pruning default of :func:`default_finetune_lr`).
    """
    if args.finetune_epochs < 0:
        raise CLIError("--finetune-epochs must be >= 0")
    if not args.finetune_epochs:
        return []
    trained = training_settings(model_path)
    optimizer = args.optimizer or trained.get("optimizer", "adam")
    if args.lr is not None:
        lr = args.lr
    elif lr_scale is not None:
        lr = lr_scale * float(trained.get("lr", 2e-3))
    else:
        lr = default_finetune_lr(optimizer, trained)
    stage = {"epochs": args.finetune_epochs, "lr": lr, "optimizer": optimizer}
    for key in ("weight_decay", "momentum"):
        if key in trained and args.optimizer is None:
            stage[key] = trained[key]
    return [{"finetune": stage}]


def default_finetune_lr(optimizer: str, trained: dict[str, Any]) -> float:
    """Fine-tuning LR: the training LR for Adam-like optimizers, a tenth of it for SGD.

    Measured on LeNet-300-100 pruned to 90% in one shot (60% top-1 before fine-tuning), two
    epochs of Adam: at the training LR 2e-3 it is back to the dense 97.93%, at 1e-3 97.67%,
    at 2e-4 96.35%. A cosine schedule anneals it anyway; SGD keeps Han et al.'s lr/10.
    """
    lr = float(trained.get("lr", 2e-3))
    return 0.1 * lr if optimizer == "sgd" else lr


def training_settings(path: str | None) -> dict[str, Any]:
    """The training settings a checkpoint records (``{}`` when none)."""
    if not path or not Path(path).is_file() or Path(path).suffix != ".safetensors":
        return {}
    from ..io import CheckpointError, read_checkpoint

    try:
        _, info = read_checkpoint(path)
    except CheckpointError:
        return {}
    extra = info.get("extra") or {}
    train = extra.get("train") or {}
    return {k: train[k] for k in ("optimizer", "lr", "weight_decay", "momentum") if k in train}


def _warn(old: str, new: str) -> None:
    from .._deprecated import warn

    warn(old, new, stacklevel=2)


def resolve_method(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """``(config kind, fields)`` for ``--method`` and the older flags."""
    from ..core.config import config_types

    method, base = args.method, {}
    if method in LEGACY_METHODS:
        kind, base = _legacy_method(args)
        _warn(f"--method {method}", f"--method {kind}" + (
            f" --criterion {base['criterion']}" if "criterion" in base else ""))  # fmt: skip
    else:
        kind = method
        if args.structured:
            raise CLIError("--structured goes with the older --method magnitude/random")
        if args.legacy_blocks is not None or args.legacy_keep is not None:
            raise CLIError(f"--blocks / --keep go with --method blocks / inputs, not {kind}")
    cls = config_types()[kind]
    fields = {f for f in cls.__dataclass_fields__}
    amount = "sparsity" if "sparsity" in fields else "ratio"
    if args.legacy_ratio is not None:
        base[amount] = args.legacy_ratio
    if args.legacy_ignore:
        base["exclude" if "exclude" in fields else "ignore"] = tuple(args.legacy_ignore)
    if args.legacy_global:
        base.update({"scope": "global"} if "scope" in fields else {"global_ranking": True})
    return kind, base


def _legacy_method(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    method = args.method
    target = getattr(args, "cfg_target_macs", None)
    for flag, owner, value in (("blocks", "blocks", args.legacy_blocks),
                               ("keep", "inputs", args.legacy_keep)):  # fmt: skip
        if value is not None and (method != owner or target is not None):
            raise CLIError(f"--{flag} goes with --method {owner} (and --method {owner} takes "
                           f"--{flag} N or --ratio R, not --target-macs)")  # fmt: skip
    if method == "blocks":
        return "block-pruning", ({"remove": args.legacy_blocks} if args.legacy_blocks else {})
    if method == "inputs":
        return "input-pruning", ({"keep": args.legacy_keep} if args.legacy_keep else {})
    if method in ("magnitude", "random") and not args.structured:
        if target is not None:
            raise CLIError("--target-macs needs structured pruning (zeroed weights do not reduce "
                           "dense MACs); add --structured or use --ratio")  # fmt: skip
        return "magnitude-pruning", {"criterion": method}
    return "structured-pruning", {"criterion": _LEGACY_STRUCTURED.get(method, method)}


def run(args: argparse.Namespace) -> int:
    """Prune (and fine-tune) through a one-stage recipe; print the before/after report."""
    kind, base = resolve_method(args)
    config = build_config(kind, args, base)
    model_path = args.model_opt or args.model_ref
    stages = [{kind: {k: v for k, v in config.items() if k != "type"}}]
    stages += finetune_stage(args, model_path)
    details = {"method": args.method, "technique": kind, "config": config, "finetune_epochs": args.finetune_epochs,
               "source": model_path, "out": args.out}  # fmt: skip
    result = run_stages(args, recipe_source(args, stages), args.out, {"prune": dict(details)})
    stage = stage_details(result, 0)
    details["summary"] = stage.get("result")
    details["structured"] = kind != "magnitude-pruning" and not kind.startswith(
        ("wanda", "sparsegpt")
    )
    report = report_of(result, f"nnshrink prune --method {kind}", details)
    emit(args, report.to_dict(), report.to_rich(), f"saved {args.out}")
    return 0


def run_sensitivity(args: argparse.Namespace) -> int:
    """Scan every conv/linear layer alone; print the table and the derived per-layer ratios."""
    from ..pruning import layer_sensitivity

    try:
        ratios = tuple(float(r) for r in args.ratios.split(",") if r.strip())
    except ValueError:
        raise CLIError(f"--ratios must be comma-separated numbers, got {args.ratios!r}") from None
    structured = bool(args.structured) or args.method not in ("magnitude", "random")
    method = _LEGACY_STRUCTURED.get(args.method, args.method) if structured else args.method
    if structured and method == "taylor":
        raise CLIError("sensitivity does not support --method taylor; use l1, l2, bn or fpgm")
    data = open_data_args(args)
    model, _ = load_model(args, data=data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            result = layer_sensitivity(model, data.test, ratios=ratios, method=method,
                                       structured=structured, example_inputs=data.example_inputs()[:1])  # fmt: skip
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
        result.plot(out / "sensitivity.png", ylabel=f"top-1 on {data.name} test")
        (out / "sensitivity.json").write_text(json.dumps(payload, indent=2) + "\n")
        payload["files"] = [str(out / n) for n in ("sensitivity.json", "sensitivity.md",
                                                    "sensitivity.png")]  # fmt: skip
        lines.append(f"wrote {out}/sensitivity.{{json,md,png}}")
    emit(args, payload, _sensitivity_table(result, data.name), "\n".join(lines))
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
