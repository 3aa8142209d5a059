"""One call that measures everything the surveys ask for, for one model state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..core.modules import as_input_tuple
from .latency import measure_latency
from .macs import count_macs
from .params import count_nonzero_params, count_params
from .size import dense_bytes


def snapshot(
    model: nn.Module,
    example_inputs: Any,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    *,
    latency: bool = True,
    runtimes: Sequence[str] = ("eager", "onnxruntime"),
    threads: int = 2,
    runs: int = 50,
    size_bytes: int | None = None,
) -> dict[str, Any]:
    """Measure params, non-zero params, MACs, size, latency and (with a loader) accuracy.

    Keys: ``params``, ``nonzero_params``, ``macs``, ``flops`` (= 2 x MACs), ``size_bytes``
    (dense fp32 parameters unless given, e.g. a compressed file's size), ``latency_ms`` (eager
    median at the batch of ``example_inputs``), ``latency_onnx_ms`` (ONNX Runtime median; ``None``
    if the model does not export), and ``top1``/``top5``/``loss``/``samples`` with a loader.

    Args:
        model: the model to measure (left in its mode).
        example_inputs: input batch for MACs and latency.
        loader: evaluation data (optional).
        latency: measure latency at all.
        runtimes: which runtimes to time.
        threads: intra-op threads for latency.
        runs: timed runs per runtime (median reported).
        size_bytes: override the size (e.g. bytes of an encoded file).

    Example:
        >>> snapshot(models.create("lenet300"), torch.zeros(1, 1, 28, 28), latency=False)["macs"]
        266200
    """
    args = as_input_tuple(example_inputs)
    out: dict[str, Any] = {
        "params": count_params(model),
        "nonzero_params": count_nonzero_params(model),
    }
    macs = count_macs(model, args)
    batch = int(args[0].shape[0])
    out["macs"] = macs // max(batch, 1)
    out["flops"] = 2 * out["macs"]
    out["size_bytes"] = dense_bytes(model) if size_bytes is None else int(size_bytes)
    if latency:
        if "eager" in runtimes:
            out["latency_ms"] = measure_latency(
                model, args, runtime="eager", threads=threads, runs=runs
            ).median_ms
        if "onnxruntime" in runtimes:
            try:
                out["latency_onnx_ms"] = measure_latency(
                    model, args, runtime="onnxruntime", threads=threads, runs=runs
                ).median_ms
            except Exception as exc:  # some custom layers do not export; say so, keep going
                out["latency_onnx_ms"] = None
                out["latency_onnx_error"] = f"{type(exc).__name__}: {exc}"[:200]
        out["latency_batch"] = batch
        out["latency_threads"] = threads
    if loader is not None:
        from ..train.evaluate import evaluate

        out.update(evaluate(model, loader))
    return out
