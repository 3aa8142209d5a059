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


def deployable_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every training-time form made final for deployment.

    :func:`nnshrink.finalize` makes masks, shared codebooks, binary latents and QAT layers plain;
    layers that compute with a virtual weight (hashed, circulant: they expose
    ``virtual_weight()`` / ``dense_weight()``) become the ``nn.Linear`` they compute, so the
    exported graph holds one dense weight instead of an index table and a gather (3-6x smaller
    files), and needs no FFT operators.

    Example:
        >>> from nnshrink.sharing import HashedLinear
        >>> m = nn.Sequential(HashedLinear(8, 4, buckets=4))
        >>> type(deployable_copy(m)[0]).__name__
        'Linear'
    """
    import copy

    from ..core.finalize import finalize
    from ..core.modules import set_submodule

    work = copy.deepcopy(model)
    finalize(work)
    for name, module in list(work.named_modules()):
        dense = getattr(module, "virtual_weight", None) or getattr(module, "dense_weight", None)
        if not name or not callable(dense) or isinstance(module, nn.Linear):
            continue
        with torch.no_grad():
            weight = dense().detach()
            bias = getattr(module, "bias", None)
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            linear = linear.to(device=weight.device, dtype=weight.dtype)
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        set_submodule(work, name, linear)
    return work


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
        model: any exportable module (pruned, decomposed and compact models included); training-
            time forms are exported in their final form (:func:`deployable_copy`).
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
    model = deployable_copy(model)
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
