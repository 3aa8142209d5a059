"""``backend="auto"`` for static int8: the faster of ONNX Runtime and torch.ao FX, per batch size.

Neither int8 runtime wins everywhere on CPU: on ResNet-20 ONNX Runtime's QDQ graph is ~3x faster
than torch.ao FX at batch 1 and FX is ~1.5x faster at batch 64 (issue 26). So the static handler
builds both from one calibration, times them once on the calibration data at each of
``PTQ.batch_sizes`` (:func:`time_runtimes`), and returns an :class:`AutoInt8Module` that runs each
batch on the runtime that was faster at the nearest measured size at or below it. The timings
and the choice are recorded in the ``PTQSummary``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ...metrics.latency import interleaved
from .ort_module import OrtInt8Module


def batch_of(inputs: Sequence[torch.Tensor], size: int) -> tuple[torch.Tensor, ...]:
    """``inputs`` resized to ``size`` rows along dim 0 (repeated or cut).

    Example:
        >>> [t.shape[0] for t in batch_of((torch.zeros(3, 2),), 7)]
        [7]
    """
    out = []
    for t in inputs:
        reps = -(-size // t.shape[0])
        out.append(t.repeat(reps, *([1] * (t.dim() - 1)))[:size].contiguous())
    return tuple(out)


def time_runtimes(
    modules: Mapping[str, nn.Module],
    inputs: Sequence[torch.Tensor],
    batch_sizes: Sequence[int],
    *,
    rounds: int = 5,
    runs: int = 3,
) -> tuple[dict[int, dict[str, float]], dict[int, str]]:
    """Median latency (ms) of each module at each batch size, interleaved; and the fastest.

    Args:
        modules: ``{runtime name: module}``.
        inputs: one calibration batch (positional inputs).
        batch_sizes: the batch sizes to time.
        rounds, runs: alternating rounds and calls per round (see
            :func:`nnshrink.metrics.latency.interleaved`).

    Returns:
        ``({batch: {runtime: median ms}}, {batch: fastest runtime})``.
    """
    timings: dict[int, dict[str, float]] = {}
    choice: dict[int, str] = {}
    for size in batch_sizes:
        x = batch_of(inputs, size)
        with torch.no_grad():
            stats = interleaved(
                {name: (lambda m=m, x=x: m(*x)) for name, m in modules.items()},
                rounds=rounds,
                runs=runs,
                warmup=3,
            )
        timings[size] = {name: round(s["median"], 4) for name, s in stats.items()}
        choice[size] = min(timings[size], key=timings[size].get)
    return timings, choice


class AutoInt8Module(OrtInt8Module):
    """An ONNX Runtime int8 session plus a PyTorch int8 module, each used where it was faster.

    It is an :class:`OrtInt8Module` (``save(path)`` writes the ONNX graph, the portable
    artefact); ``forward`` sends a batch of ``n`` rows to ``choice[b]`` for the largest measured
    ``b <= n`` (the smallest measured size below that).

    Args:
        onnx_bytes: the int8 ONNX graph.
        torch_module: the PyTorch int8 module (a torch.ao FX ``GraphModule``).
        choice: ``{batch size: "onnxruntime" | "torch-fx"}``.
        timings: ``{batch size: {runtime: median ms}}`` behind the choice.
        threads: ONNX Runtime intra-op threads.

    Example:
        >>> auto = AutoInt8Module(onnx_bytes, fx_module, {1: "onnxruntime", 64: "torch-fx"},
        ...                       timings)  # doctest: +SKIP
        >>> auto.runtime_for(8), auto.runtime_for(100)  # doctest: +SKIP
        ('onnxruntime', 'torch-fx')
    """

    def __init__(
        self,
        onnx_bytes: bytes,
        torch_module: nn.Module,
        choice: Mapping[int, str],
        timings: Mapping[int, Mapping[str, float]] | None = None,
        threads: int = 0,
        *,
        stop_spinning: bool = False,
    ) -> None:
        super().__init__(onnx_bytes, threads, stop_spinning=stop_spinning)
        self.torch_module = torch_module
        self.choice = {int(k): str(v) for k, v in choice.items()}
        self.timings = {int(k): dict(v) for k, v in (timings or {}).items()}

    def runtime_for(self, batch: int) -> str:
        """The runtime a batch of ``batch`` rows runs on."""
        sizes = sorted(self.choice)
        below = [s for s in sizes if s <= batch]
        return self.choice[below[-1] if below else sizes[0]]

    def forward(self, *inputs: torch.Tensor) -> Any:  # noqa: D102
        if self.runtime_for(int(inputs[0].shape[0])) == "torch-fx":
            with torch.no_grad():
                return self.torch_module(*inputs)
        return super().forward(*inputs)

    def __deepcopy__(self, memo: dict) -> AutoInt8Module:
        return AutoInt8Module(
            self.onnx_bytes,
            copy.deepcopy(self.torch_module, memo),
            self.choice,
            self.timings,
            self.threads,
            stop_spinning=self.stop_spinning,
        )

    def extra_repr(self) -> str:
        picks = ", ".join(f"b{b}: {rt}" for b, rt in sorted(self.choice.items()))
        return f"{super().extra_repr()}, {picks}"
