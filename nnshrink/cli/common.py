"""Shared pieces of the command line: argument groups, model/data loading, output, errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn


class CLIError(Exception):
    """A user error: printed as one line (no traceback) and exit status 2."""


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` (print one JSON object on stdout instead of tables)."""
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Add ``--data``, ``--data-root``, ``--batch-size``, ``--limit``, ``--train-limit``."""
    from ..data import names

    parser.add_argument("--data", required=required, choices=names(), help="data set")
    parser.add_argument("--data-root", default=None, help="directory with the data files")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size")
    parser.add_argument(
        "--limit", type=int, default=None, help="use only the first N test samples (quick runs)"
    )
    parser.add_argument(
        "--train-limit", type=int, default=None, help="use only the first N training samples"
    )


def data_loaders(args: argparse.Namespace, seed: int = 0):
    """``(train_loader, test_loader)`` for the data arguments (errors become :class:`CLIError`)."""
    from ..data import DataNotFoundError, loader

    try:
        train = loader(
            args.data, "train", args.batch_size, train=True, root=args.data_root, seed=seed,
            limit=getattr(args, "train_limit", None),
        )  # fmt: skip
        test = loader(args.data, "test", 1000, root=args.data_root, limit=args.limit)
    except DataNotFoundError as exc:
        raise CLIError(str(exc)) from None
    return train, test


def example_input(args: argparse.Namespace, batch: int = 1) -> torch.Tensor:
    """A zero batch shaped like one sample of ``args.data``."""
    from ..data import input_shape

    return torch.zeros(batch, *input_shape(args.data))


def load_model_arg(value: str, **create_kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint path, an ``.nns`` file, or a zoo model name → ``(model, info)``."""
    from ..io import CheckpointError, load_checkpoint
    from ..models import create, list_models

    path = Path(value)
    if path.is_file():
        from ..storage import is_nns_file

        if is_nns_file(path):
            from ..storage import load as load_nns

            try:
                model = load_nns(path)
            except Exception as exc:
                raise CLIError(f"{path}: {exc}") from None
            return model, {"path": str(path), "format": "nns"}
        try:
            model, info = load_checkpoint(path)
        except CheckpointError as exc:
            raise CLIError(str(exc)) from None
        info["path"] = str(path)
        return model, info
    if value in list_models():
        return create(value, **create_kwargs), {"spec": {"name": value, "kwargs": create_kwargs}}
    raise CLIError(
        f"{value!r} is neither a file nor a model name; model names: {', '.join(list_models())}"
    )


def model_kwargs_for_data(data: str | None) -> dict[str, Any]:
    """``in_channels``/``input_size`` for zoo models built for data set ``data``."""
    if data is None:
        return {}
    from ..data import input_shape

    c, h, _ = input_shape(data)
    return {"in_channels": c, "input_size": h}


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
