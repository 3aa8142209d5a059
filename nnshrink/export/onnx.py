"""ONNX export, isolated here because the exporters' APIs move between PyTorch releases.

We use the TorchScript-based exporter (``dynamo=False``) by default: on the small CNNs we target
it is ~20x faster than the torch.export-based one (0.15 s vs 3 s for a LeNet here) and handles
every layer nnshrink produces. It is deprecated upstream, so we fall back to the dynamo exporter
when it is gone or fails.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.modules import as_input_tuple
from ..utils.atomic import atomic_write_bytes


def export_onnx(
    model: nn.Module,
    example_inputs: Any,
    path: str | os.PathLike | None = None,
    *,
    opset: int = 17,
    dynamic_batch: bool = True,
) -> bytes:
    """Export ``model`` (in eval mode) to ONNX; write it to ``path`` atomically if given.

    Args:
        model: any exportable module (pruned, decomposed and compact models included).
        example_inputs: a tensor or tuple of tensors with the input shapes.
        path: output file, or ``None`` to only return the bytes.
        opset: ONNX opset version.
        dynamic_batch: make the first dimension of inputs and outputs dynamic.

    Returns:
        The serialized ONNX model.

    Example:
        >>> export_onnx(models.create("lenet5"), torch.zeros(1, 1, 28, 28), "lenet5.onnx")  # doctest: +SKIP
    """
    args = as_input_tuple(example_inputs)
    was_training = model.training
    model.eval()
    input_names = [f"input{i}" for i in range(len(args))]
    dynamic_axes = {n: {0: "batch"} for n in [*input_names, "output"]} if dynamic_batch else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    model,
                    args,
                    buffer,
                    input_names=input_names,
                    output_names=["output"],
                    dynamic_axes=dynamic_axes,
                    opset_version=opset,
                    dynamo=False,
                )
            except Exception:  # legacy exporter missing or unable: use torch.export's
                buffer = io.BytesIO()
                dynamic_shapes = None
                if dynamic_batch:
                    batch = torch.export.Dim("batch")
                    dynamic_shapes = tuple({0: batch} for _ in args)
                program = torch.onnx.export(
                    model, args, dynamo=True, dynamic_shapes=dynamic_shapes, opset_version=18
                )
                program.save(buffer)
    finally:
        model.train(was_training)
    data = buffer.getvalue()
    if path is not None:
        atomic_write_bytes(Path(path), data)
    return data
