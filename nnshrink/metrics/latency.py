"""Measured latency in PyTorch eager and in ONNX Runtime, with threads pinned.

Small CNNs on CPU are overhead-bound in eager PyTorch (a ResNet-20 at batch 1: ~3 ms eager vs
~0.2 ms in ONNX Runtime here), so a speed-up measured only in eager can mislead. We report both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.modules import as_input_tuple

RUNTIMES = ("eager", "onnxruntime", "eager-fp16", "eager-bf16", "compile")
_HALF = {"eager-fp16": torch.float16, "eager-bf16": torch.bfloat16}


@dataclasses.dataclass
class LatencyStats:
    """Latency of one configuration: median and spread in milliseconds."""

    runtime: str
    batch_size: int
    threads: int
    runs: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON."""
        return dataclasses.asdict(self)


def time_callable(fn: Callable[[], Any], *, warmup: int = 10, runs: int = 50) -> list[float]:
    """Call ``fn`` ``warmup`` times, then time ``runs`` calls; returns milliseconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def interleaved(
    fns: dict, *, rounds: int, runs: int, warmup: int = 3, seed: int = 0
) -> dict[str, dict]:
    """Pooled median and 10th percentile (ms) per callable, timed in alternating short rounds
    so that load from other processes falls on every variant alike.

    The order of the variants is shuffled every round (seeded): a runtime whose worker threads
    keep spinning after a call (ONNX Runtime, OpenMP) slows whatever runs right after it, and a
    fixed order would always hand that penalty to the same variant. Shuffling spreads the
    penalty; build ORT sessions with ``ort_session(..., stop_spinning=True)`` to remove it.

    Args:
        fns: ``{name: callable}`` to compare.
        rounds: alternating rounds over all callables.
        runs: timed calls per callable and round.
        warmup: untimed calls per callable first.
        seed: seed of the per-round shuffle.

    Example:
        >>> stats = interleaved({"a": lambda: None, "b": lambda: None}, rounds=2, runs=3)
        >>> sorted(stats), sorted(stats["a"])
        (['a', 'b'], ['median', 'p10'])
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rng = random.Random(seed)
    order = list(fns)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = fns[name]
            for _ in range(runs):
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {
        k: {"median": float(np.median(v)), "p10": float(np.percentile(v, 10))}
        for k, v in times.items()
    }


def summarize(times_ms: list[float], runtime: str, batch_size: int, threads: int) -> LatencyStats:
    """Median, 10th/90th percentile, min and mean of a list of timings."""
    arr = np.asarray(times_ms)
    return LatencyStats(
        runtime=runtime,
        batch_size=batch_size,
        threads=threads,
        runs=len(times_ms),
        median_ms=float(np.median(arr)),
        p10_ms=float(np.percentile(arr, 10)),
        p90_ms=float(np.percentile(arr, 90)),
        min_ms=float(arr.min()),
        mean_ms=float(statistics.fmean(times_ms)),
    )


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Temporarily set ``torch.set_num_threads``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def channel_block() -> int:
    """Channel multiple that CPU conv kernels run best at on this machine: 16 with AVX-512, else 8.

    ONNX Runtime's blocked (NCHWc) convolutions and oneDNN's blocked formats process channels in
    vector-width blocks; counts that are not a multiple fall back to slower paths. Measured here:
    a ResNet-56 pruned to half its MACs ran 1.0x (odd counts), 1.4x (multiples of 8) and 2.0x
    (multiples of 16) faster than dense in ONNX Runtime on an AVX-512 CPU.

    Example:
        >>> channel_block() in (8, 16)
        True
    """
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def park_ort_workers(options: Any) -> None:
    """Make ONNX Runtime sessions built with ``options`` park their workers after each run.

    See ``stop_spinning`` of :func:`ort_session` for why; shared by every session we time.

    Args:
        options: an ``onnxruntime.SessionOptions``.

    Example:
        >>> import onnxruntime as ort
        >>> options = ort.SessionOptions(); park_ort_workers(options)
        >>> options.get_session_config_entry("session.force_spinning_stop")
        '1'
    """
    options.add_session_config_entry("session.force_spinning_stop", "1")


def ort_session(onnx_bytes: bytes, threads: int, *, stop_spinning: bool = False):
    """An ONNX Runtime CPU session with intra-op threads pinned and full graph optimisation.

    Args:
        onnx_bytes: the serialized ONNX model.
        threads: intra-op threads.
        stop_spinning: park the worker threads at the end of every ``run``. Use it when
            sessions take turns (:func:`interleaved`): by default ORT workers spin for tens of
            milliseconds after a run, and on a small machine they take the cores from the
            next session. Timing VGG-16's features.37 beside its CP version on 2 cores, the
            dense conv's median read 9.0 ms with spinning sessions and 2.9 ms with parked ones
            (``benchmarks/results/lowrank_latency_cp_fused_round16_vgg16_b32*.json``).
            Threads still spin within a run, so a lone run costs about what it costs with
            spinning on.

    Example:
        >>> from nnshrink.export.onnx import export_onnx  # doctest: +SKIP
        >>> s = ort_session(export_onnx(model, (x,)), 2, stop_spinning=True)  # doctest: +SKIP
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if stop_spinning:
        park_ort_workers(options)
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def forward_call(
    model: nn.Module,
    example_inputs: Any,
    *,
    runtime: str = "eager",
    threads: int = 2,
    onnx_bytes: bytes | None = None,
    stop_spinning: bool = False,
) -> Callable[[], Any]:
    """A zero-argument call that runs one forward pass of ``model`` on ``example_inputs``.

    ``"eager"`` runs the module under ``inference_mode`` as it is (put it in eval mode and pin
    the threads around the timing); ``"eager-fp16"`` / ``"eager-bf16"`` run a copy in half /
    bfloat16 precision (floating inputs cast alike); ``"compile"`` runs ``torch.compile(model)``
    (compiled during the warm-up); ``"onnxruntime"`` exports it (or takes ``onnx_bytes``) and
    runs a CPU session with ``threads`` intra-op threads. On CUDA every call ends with
    ``torch.cuda.synchronize`` so the time is the kernels' (asynchronous launches would
    otherwise return at once). What :func:`measure_latency` and :func:`interleaved` time.

    Args:
        model: the model.
        example_inputs: a tensor or tuple of tensors.
        runtime: ``"eager"`` or ``"onnxruntime"``.
        threads: intra-op threads of the ONNX Runtime session.
        onnx_bytes: a ready ONNX model for ``onnxruntime``.
        stop_spinning: park the ONNX Runtime workers after each call (see
            :func:`ort_session`); set it when the call takes turns with others.

    Example:
        >>> run = forward_call(nn.Linear(2, 2), torch.zeros(1, 2))
        >>> tuple(run().shape)
        (1, 2)
    """
    args = as_input_tuple(example_inputs)
    if runtime in ("eager", "compile", *_HALF):
        module = model
        if runtime in _HALF:
            import copy

            dtype = _HALF[runtime]
            module = copy.deepcopy(model).to(dtype)
            args = tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a
                         for a in args)  # fmt: skip
        elif runtime == "compile":
            module = torch.compile(model)
        devices = {a.device for a in args if torch.is_tensor(a) and a.device.type == "cuda"}
        sync = (lambda: torch.cuda.synchronize(next(iter(devices)))) if devices else None

        def call() -> Any:
            with torch.inference_mode():
                out = module(*args)
            if sync is not None:
                sync()
            return out

        return call
    if runtime == "onnxruntime":
        cpu_args = tuple(a.detach().cpu() if torch.is_tensor(a) else a for a in args)
        if onnx_bytes is None:
            import copy

            from ..export.onnx import export_onnx

            on_cpu = model if _device_of(model).type == "cpu" else copy.deepcopy(model).cpu()
            onnx_bytes = export_onnx(on_cpu, cpu_args)
        args = cpu_args
        session = ort_session(onnx_bytes, threads, stop_spinning=stop_spinning)
        feeds = {i.name: a.detach().cpu().numpy() for i, a in zip(session.get_inputs(), args)}
        return lambda: session.run(None, feeds)
    raise ValueError(f"unknown runtime {runtime!r}; choose from {RUNTIMES}")


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def measure_latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    runtime: str = "eager",
    threads: int = 2,
    warmup: int = 10,
    runs: int = 50,
    onnx_bytes: bytes | None = None,
) -> LatencyStats:
    """Median latency of one forward pass on ``example_inputs`` (batch size = their first dim).

    Args:
        model: the model (eval mode is used; its mode is restored).
        example_inputs: a tensor or tuple of tensors.
        runtime: ``"eager"`` (PyTorch, ``inference_mode``), ``"eager-fp16"``, ``"eager-bf16"``,
            ``"compile"`` (``torch.compile``) or ``"onnxruntime"`` (exported, CPU session). On
            CUDA each call is synchronized (see :func:`forward_call`).
        threads: intra-op threads for the measurement.
        warmup: untimed calls first.
        runs: timed calls; the median is reported.
        onnx_bytes: a ready ONNX model for ``onnxruntime`` (exported from ``model`` if omitted).

    Example:
        >>> measure_latency(models.create("lenet5"), torch.zeros(1, 1, 28, 28)).median_ms  # doctest: +SKIP
        0.21
    """
    args = as_input_tuple(example_inputs)
    batch = int(args[0].shape[0]) if args and hasattr(args[0], "shape") else 1
    call = forward_call(model, args, runtime=runtime, threads=threads, onnx_bytes=onnx_bytes)
    if runtime != "onnxruntime":
        was_training = model.training
        model.eval()
        try:
            with torch_threads(threads):
                times = time_callable(call, warmup=warmup, runs=runs)
        finally:
            model.train(was_training)
    else:
        times = time_callable(call, warmup=warmup, runs=runs)
    return summarize(times, runtime, batch, threads)
