"""Shared pieces of the command line: model / data / device / measurement flags, the one-stage
recipe every technique command runs, output and errors.

Every command names models, data and metrics the same way:

* a model is a checkpoint (``.safetensors``) or ``.nns`` file, a zoo name (``resnet20``), the
  user's factory ``package.module:callable`` (``--model-kwargs JSON``) or ``hf:DIR``;
  ``--trust-code`` lets a file import the factory it names;
* data is a built-in name, a factory ``package.module:callable`` (``--data-kwargs JSON``), a
  ``.pt`` / ``.npz`` tensor file, or ``--data-dir DIR`` (an image folder, ``--image-size``);
* ``--metric`` / ``--loss`` name the user's metric and training loss; ``--device`` and ``--amp``
  choose where and how training runs.

Technique commands build a recipe (:func:`run_stages`) and call the recipe runner, so that model
and data handling, training and measurement live in one place.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch


class CLIError(Exception):
    """A user error: printed as one line (no traceback) and exit status 2."""


MODEL_HELP = ("checkpoint (.safetensors) or .nns file, zoo model name, 'package.module:callable' "
              "(your factory) or hf:DIR (a local Hugging Face model folder)")  # fmt: skip
DATA_HELP = ("built-in data set (mnist, fashion-mnist, cifar10), 'package.module:callable' "
             "returning (train, test[, val]) loaders, or a .pt/.npz file with x_train, y_train, "
             "x_test, y_test")  # fmt: skip


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (print one JSON object on stdout instead of tables)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _json_mapping(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object like '{\"width\": 32}'")
    return value


# -- model ------------------------------------------------------------------------------------
def add_model_args(
    parser: argparse.ArgumentParser, *, positional: bool = True, flag: str = "--model"
) -> None:
    """Add the model reference (positional ``MODEL`` and/or ``--model``), kwargs, trust."""
    if positional:
        parser.add_argument("model_ref", nargs="?", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument(flag, dest="model_opt", default=None, help=MODEL_HELP)
    parser.add_argument("--model-kwargs", type=_json_mapping, default=None,
                        help="JSON keyword arguments for a zoo model or your factory")  # fmt: skip
    parser.add_argument("--trust-code", action="store_true",
                        help="let a checkpoint import the model factory it names")  # fmt: skip


def model_spec(args: argparse.Namespace, value: str | None = None) -> dict[str, Any]:
    """The recipe ``model:`` mapping of the model arguments."""
    from ..models import list_models
    from ..utils.references import is_reference

    ref = value or getattr(args, "model_opt", None) or getattr(args, "model_ref", None)
    if not ref:
        raise CLIError(f"give a model: {MODEL_HELP}")
    kwargs = getattr(args, "model_kwargs", None) or {}
    trust = bool(getattr(args, "trust_code", False))
    if Path(ref).is_file():
        spec: dict[str, Any] = {"checkpoint": str(ref)}
        if trust:
            spec["trust_code"] = True
        return spec
    if ref.startswith("hf:"):
        return {"hf": ref[3:]}
    if is_reference(ref):
        return {"factory": ref, **({"kwargs": kwargs} if kwargs else {})}
    if ref in list_models():
        return {"name": ref, **({"kwargs": kwargs} if kwargs else {})}
    raise CLIError(f"{ref!r} is not a file, a zoo model ({', '.join(list_models())}), "
                   "a 'package.module:callable' factory or hf:DIR")  # fmt: skip


# -- data -------------------------------------------------------------------------------------
def add_data_args(
    parser: argparse.ArgumentParser, required: bool = True, batch_size: int = 128
) -> None:
    """Add the data reference and its options, and ``--metric`` / ``--loss``."""
    parser.add_argument("--data", default=None, help=DATA_HELP)
    parser.add_argument("--data-kwargs", type=_json_mapping, default=None,
                        help="JSON keyword arguments for your data factory")  # fmt: skip
    parser.add_argument("--data-dir", default=None,
                        help="an image folder (DIR/<class>/<image>, or DIR/train + DIR/test)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=None, help="--data-dir: resize to NxN")
    parser.add_argument("--data-root", default=None, help="directory with a built-in set's files")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="training batch size")
    parser.add_argument("--limit", type=int, default=None, help="use only N evaluation samples")
    parser.add_argument("--train-limit", type=int, default=None, help="use only N training samples")
    parser.add_argument("--metric", default=None,
                        help="your metric 'package.module:callable' (model, loader) -> dict "
                        "(default: top-1 accuracy)")  # fmt: skip
    parser.add_argument("--loss", default=None,
                        help="your training loss 'package.module:callable', e.g. torch.nn:MSELoss "
                        "(default: cross-entropy)")  # fmt: skip
    parser.set_defaults(data_required=required)


def data_spec(args: argparse.Namespace) -> dict[str, Any] | None:
    """The recipe ``data:`` mapping of the data arguments (``None`` when none were given)."""
    from ..data import names
    from ..utils.references import is_reference

    if args.data_dir and args.data:
        raise CLIError("give --data or --data-dir, not both")
    spec: dict[str, Any]
    if args.data_dir:
        spec = {"image_dir": args.data_dir}
        if args.image_size:
            spec["image_size"] = args.image_size
    elif args.data is None:
        if getattr(args, "data_required", True):
            raise CLIError(f"give --data ({DATA_HELP}) or --data-dir DIR")
        return None
    elif args.data in names():
        spec = {"name": args.data}
        if args.data_root:
            spec["root"] = args.data_root
    elif Path(args.data).suffix in (".pt", ".pth", ".npz"):
        if not Path(args.data).is_file():
            raise CLIError(f"--data {args.data}: no such file")
        spec = {"file": args.data}
    elif is_reference(args.data):
        spec = {"factory": args.data}
        if args.data_kwargs:
            spec["kwargs"] = args.data_kwargs
    else:
        raise CLIError(f"--data {args.data!r}: not a built-in set ({', '.join(names())}), a .pt/"
                       ".npz file or a 'package.module:callable' factory")  # fmt: skip
    for key in ("batch_size", "limit", "train_limit"):
        if getattr(args, key, None) is not None:
            if getattr(args, key) < 1:
                raise CLIError(f"--{key.replace('_', '-')} must be >= 1")
            spec[key] = getattr(args, key)
    return spec


# -- device and measurement -------------------------------------------------------------------
def add_device_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--device auto|cpu|cuda|cuda:N`` and ``--amp bf16|fp16``."""
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when present), cpu, cuda or cuda:N")  # fmt: skip
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                        help="mixed precision for training, fine-tuning and distillation")  # fmt: skip


def add_measure_args(parser: argparse.ArgumentParser, runs: int = 30) -> None:
    """Add ``--no-latency``, ``--latency-threads``, ``--latency-batch``, ``--runs``."""
    parser.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    parser.add_argument("--latency-threads", type=int, default=2, help="threads for latency")
    parser.add_argument(
        "--latency-batch", type=int, default=1, help="batch size of the latency runs"
    )
    parser.add_argument("--runs", type=int, default=runs, help="timed runs for latency")


def measure_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe ``measure:`` mapping of the measurement arguments."""
    if getattr(args, "latency_batch", 1) < 1:
        raise CLIError("--latency-batch must be >= 1")
    return {
        "latency": not getattr(args, "no_latency", False),
        "threads": getattr(args, "latency_threads", 2),
        "runs": getattr(args, "runs", 30),
        "batch_size": getattr(args, "latency_batch", 1),
    }


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--out`` (the model file), ``--run-dir``, ``--resume`` and ``--seed``."""
    parser.add_argument("--out", required=True,
                        help="file to write: .safetensors (checkpoint), .nns (compressed) or .onnx")  # fmt: skip
    parser.add_argument("--run-dir", default=None,
                        help="folder for the stage artefacts and report (default OUT.run)")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--seed", type=int, default=0)


# -- the one-stage recipe ---------------------------------------------------------------------
def recipe_source(
    args: argparse.Namespace,
    stages: list[dict[str, Any]],
    *,
    model: dict | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The recipe mapping a command runs: its model, data, metric, device and stages."""
    source: dict[str, Any] = {
        "name": name or args.command,
        "model": model or model_spec(args),
        "seed": getattr(args, "seed", 0),
        "measure": measure_spec(args),
        "stages": stages,
        "device": getattr(args, "device", "auto"),
    }
    data = data_spec(args)
    if data is not None:
        source["data"] = data
    for key in ("metric", "loss", "amp"):
        if getattr(args, key, None):
            source[key] = getattr(args, key)
    return source


def run_stages(
    args: argparse.Namespace,
    source: dict[str, Any],
    out: str | None,
    extra: dict[str, Any] | None = None,
):
    """Validate and run a recipe mapping; write the final model to ``out``.

    The stage artefacts and the report go to ``--run-dir`` (default ``OUT.run``); without
    ``--resume`` a previous run there is replaced. ``extra`` is stored in an ``.safetensors``
    output (``info["extra"]``), next to the run's own provenance.
    """
    from ..recipes import RecipeError, parse_recipe, run_recipe

    try:
        recipe = parse_recipe(source)
    except RecipeError as exc:
        raise CLIError(str(exc)) from None
    run_dir = _run_dir(args, out)
    if not getattr(args, "resume", False) and (run_dir / "state.json").is_file():
        shutil.rmtree(run_dir)  # our own previous run of this command (it has our state file)
    quiet = bool(getattr(args, "json", False))

    def log(line: str) -> None:
        if not quiet:
            print(f"[nnshrink {args.command}] {line}", file=sys.stderr)

    try:
        return run_recipe(recipe, run_dir, resume=getattr(args, "resume", False) and
                          (run_dir / "state.json").is_file(), progress=not quiet, log=log,
                          final_path=out, final_extra=extra)  # fmt: skip
    except (RecipeError, ValueError, KeyError) as exc:  # a technique refusing the model, ...
        raise CLIError(str(exc).strip("'\"")) from None


def _run_dir(args: argparse.Namespace, out: str | None) -> Path:
    if getattr(args, "run_dir", None):
        return Path(args.run_dir)
    if out:
        return Path(str(out) + ".run")
    return Path(tempfile.mkdtemp(prefix="nnshrink-"))


def report_of(result, title: str, details: dict[str, Any] | None = None):
    """The before/after :class:`~nnshrink.metrics.Report` of a run (first row vs last row)."""
    from ..metrics import Report

    headline = result.task.headline
    extra = () if headline in ("top1",) else (headline,)
    return Report(result.rows[0], result.rows[-1], title=title, details=details or {},
                  extra_keys=extra)  # fmt: skip


def stage_details(result, index: int = 0) -> dict[str, Any]:
    """The details the runner recorded for technique stage ``index`` (0 = the first stage)."""
    import json as _json

    report = _json.loads(result.report_json.read_text())
    return report["stages"][index]["details"]


# -- loading without a run (profile, export, inspect) -----------------------------------------
def load_model(args: argparse.Namespace, value: str | None = None, data=None):
    """Build the model the arguments name (``data``: a DataBundle for zoo input shapes)."""
    from ..recipes.models import build_model
    from ..utils.references import ReferenceError_

    spec = model_spec(args, value)
    try:
        return build_model(spec, data), spec
    except (ReferenceError_, ValueError, TypeError, KeyError) as exc:
        raise CLIError(f"model: {exc}") from None


def open_data_args(args: argparse.Namespace):
    """The DataBundle of the data arguments, or ``None`` when no data was given."""
    from ..data import DataError, DataNotFoundError, open_data

    spec = data_spec(args)
    if spec is None:
        return None
    try:
        return open_data(spec, seed=getattr(args, "seed", 0))
    except (DataError, DataNotFoundError) as exc:
        raise CLIError(str(exc)) from None


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout."""
    sys.stdout.write(json.dumps(obj, default=_default) + "\n")


def _default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)


def emit(args: argparse.Namespace, payload: dict[str, Any], *renderables: Any) -> None:
    """Print ``payload`` as JSON with ``--json``, else the rich renderables (tables, text)."""
    if getattr(args, "json", False):
        print_json(payload)
        return
    from rich.console import Console

    console = Console()
    for item in renderables:
        console.print(item)


def show_deprecations() -> None:
    """Deprecated flags and names warn on stderr (Python hides DeprecationWarning by default)."""
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"nnshrink\..*")
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"nnshrink: {category.__name__}: {message}", file=sys.stderr)
