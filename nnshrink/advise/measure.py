"""Measurements for the advisor: cheap ones before the search, and finished candidates.

Before the search: the baseline (the metric's score, checkpoint bytes, latency, MACs), where the
time goes (:func:`layer_latency_share`), and a *zero-shot* measurement of every candidate
(:func:`zero_shot`): its technique stages applied without any training. Bytes, MACs and latency
are set by a candidate's structure, so the zero-shot values predict the trained candidate's
closely; its zero-shot score is the pipeline-level sensitivity that orders the search.

Inputs come from the data's first batch, never from a data-set name: latency runs on the
budget's batch size of real samples, MACs are counted on one sample.

After a candidate ran as a recipe: :func:`measure_run` measures the deployable artifact.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core import Config, as_input_tuple, compress_, eval_mode
from ..metrics.latency import forward_call, time_callable, torch_threads
from ..metrics.macs import count_macs_per_sample
from ..quantization.backends.ort import OrtInt8Module
from .budget import Budget, Measurement

TECHNIQUE_STAGES = ("prune", "quantize", "share", "decompose", "compact")


@dataclasses.dataclass
class LayerTime:
    """Share of the eager forward time spent in one leaf module."""

    name: str
    type: str
    ms: float
    share: float


def layer_latency_share(
    model: nn.Module, example_inputs: torch.Tensor, *, threads: int = 1, runs: int = 10
) -> list[LayerTime]:
    """Time every leaf module with parameters in eager PyTorch; sorted by time, largest first.

    Args:
        model: the model (put in eval mode for the measurement, then restored).
        example_inputs: one input batch.
        threads: intra-op threads.
        runs: timed forward passes (after two warm-up passes).

    Example:
        >>> rows = layer_latency_share(nn.Sequential(nn.Linear(8, 8)), torch.zeros(1, 8))
        >>> rows[0].name, round(rows[0].share, 6) <= 1.0
        ('0', True)
    """
    args = as_input_tuple(example_inputs)
    leaves = [(n, m) for n, m in model.named_modules()
              if n and not list(m.children()) and any(True for _ in m.parameters(False))]  # fmt: skip
    totals = {n: 0.0 for n, _ in leaves}
    starts: dict[str, float] = {}
    handles = []
    for name, module in leaves:

        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            totals[name] += time.perf_counter() - starts[name]

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad(), eval_mode(model):
            for _ in range(2):
                model(*args)
            for n in totals:
                totals[n] = 0.0
            t0 = time.perf_counter()
            for _ in range(runs):
                model(*args)
            whole = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
        torch.set_num_threads(previous)
    types = dict((n, type(m).__name__) for n, m in leaves)
    rows = [LayerTime(n, types[n], 1e3 * t / runs, t / whole if whole > 0 else 0.0)
            for n, t in totals.items()]  # fmt: skip
    return sorted(rows, key=lambda r: -r.ms)


def latency_inputs(example_inputs: Any, batch_size: int) -> Any:
    """``batch_size`` real samples from an input batch (repeated when the batch is smaller);
    tensors and tuples / lists of tensors, on the CPU.

    Example:
        >>> tuple(latency_inputs(torch.arange(6.0).view(3, 2), 4).shape)
        (4, 2)
    """

    def take(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        t = t.detach().cpu()
        reps = -(-batch_size // t.shape[0])
        return (t.repeat(reps, *([1] * (t.dim() - 1))) if reps > 1 else t)[:batch_size].clone()

    if isinstance(example_inputs, tuple | list):
        return tuple(take(t) for t in example_inputs)
    return take(example_inputs)


def deployed_call(
    model: nn.Module, budget: Budget, example_inputs: Any, *, stop_spinning: bool = False
) -> Callable[[], Any]:
    """A zero-argument call that runs ``model`` once as the budget deploys it (batch, threads,
    runtime). An int8 model from PTQ is an ONNX Runtime session already: it runs as it is,
    with the budget's threads, whatever ``budget.runtime`` says. Eager models are put in eval
    mode.

    Args:
        model: the model (an ``OrtInt8Module`` runs its own session).
        budget: batch size, threads and runtime.
        example_inputs: an input batch; the call runs ``budget.batch_size`` of its samples.
        stop_spinning: park ONNX Runtime workers after each call, for calls timed in turns
            (:func:`nnshrink.metrics.latency.ort_session`).

    Example:
        >>> budget = Budget(max_latency_ms=1, runtime="eager")
        >>> tuple(deployed_call(nn.Linear(4, 2), budget, torch.zeros(8, 4))().shape)
        (1, 2)
    """
    x = latency_inputs(example_inputs, budget.batch_size)
    if isinstance(model, OrtInt8Module):
        model.set_threads(budget.threads, stop_spinning=stop_spinning)
        return forward_call(model.eval(), x, runtime="eager")
    if budget.runtime == "eager":
        model.eval()
    return forward_call(
        model, x, runtime=budget.runtime, threads=budget.threads, stop_spinning=stop_spinning
    )


def _median_ms(fn: Callable[[], Any], runs: int, warmup: int = 5) -> float:
    return statistics.median(time_callable(fn, warmup=warmup, runs=runs))


def latency_ms(
    model: nn.Module,
    budget: Budget,
    example_inputs: Any,
    runs: int = 20,
    rounds: int = 5,
) -> float:
    """Latency of ``model`` at the budget's batch size, threads and runtime: the lowest of
    ``rounds`` medians of ``runs`` calls each.

    Why the lowest median: on a shared machine bursts of other work inflate whole stretches of
    calls (one median of a sub-millisecond ResNet-20 varied by 2x between runs of the same
    architecture); interference only ever adds time, so the best round is the model's own. A
    short pause before each round lets worker threads of earlier work (PyTorch's OpenMP pool
    after training, other ONNX Runtime sessions) stop spinning on the cores first. Timing the
    baseline beside each candidate was tried and rejected: two live ONNX Runtime sessions taking
    turns slowed each other (an int8 candidate measured 0.17-0.22 ms that way, 0.11 ms alone).

    Example:
        >>> latency_ms(nn.Linear(4, 4), Budget(max_latency_ms=1), torch.zeros(1, 4))  # doctest: +SKIP
        0.011
    """
    was_training = model.training
    with torch_threads(budget.threads):
        gc.collect()  # sessions of dropped candidates: their threads must not run beside this one
        call = deployed_call(model, budget, example_inputs)
        medians = []
        for _ in range(max(1, rounds)):
            time.sleep(0.02)
            medians.append(_median_ms(call, runs))
    model.train(was_training)
    return min(medians)


def macs_per_sample(model: nn.Module, example_inputs: Any) -> int:
    """MACs for one sample (the first of ``example_inputs``)."""
    return int(count_macs_per_sample(model, example_inputs))


def score_of(task: Any, model: nn.Module, loader: Iterable[Any]) -> float:
    """The headline value of ``task``'s metric for ``model`` on ``loader`` (run on the CPU).

    Example:
        >>> from nnshrink.train.task import Task
        >>> score_of(Task(), nn.Linear(2, 2), [(torch.zeros(4, 2), torch.zeros(4).long())])
        1.0
    """
    return float(task.score(task.evaluate(model, loader)))


def measure_model(
    model: nn.Module,
    budget: Budget,
    example_inputs: Any,
    *,
    artifact: str | os.PathLike,
    bytes_kind: str,
    loader: Iterable[Any] | None = None,
    task: Any = None,
    score: float | None = None,
    macs: int | None = None,
    latency: bool = True,
    runs: int = 20,
) -> Measurement:
    """Measure one model: its score (or the given ``score``), artifact bytes, latency, MACs.

    Args:
        model: the model as it runs (an ``OrtInt8Module`` for int8 PTQ).
        budget: gives the latency batch size, threads and runtime.
        example_inputs: an input batch (latency samples, and one sample for MACs).
        artifact: the file whose size is the model's bytes.
        bytes_kind: ``"nns"``, ``"int8-onnx"`` or ``"checkpoint"``.
        loader: evaluation data (when ``score`` is not given).
        task: the :class:`~nnshrink.train.task.Task` scoring ``loader`` (default: top-1).
        score: an already measured headline value.
        macs: MACs per sample when known (an int8 session's MACs are its float graph's).
        latency: measure latency.
        runs: timed runs for the latency median.
    """
    if score is None and loader is not None:
        from ..train.task import Task

        score = score_of(task if task is not None else Task(), model, loader)
    if macs is None:
        macs = macs_per_sample(model, example_inputs)
    return Measurement(
        score=score,
        bytes=Path(artifact).stat().st_size,
        bytes_kind=bytes_kind,
        latency_ms=latency_ms(model, budget, example_inputs, runs) if latency else None,
        macs=int(macs),
    )


def artifact_of(out_dir: str | os.PathLike, model: nn.Module) -> tuple[Path, str]:
    """The deployable file of a finished recipe run in ``out_dir`` and its kind.

    ``model.nns`` when the run encoded; the int8 ONNX file (written here when missing) for a
    PTQ-to-ONNX-Runtime model; otherwise the checkpoint of the last stage.
    """
    out = Path(out_dir)
    if (out / "model.nns").is_file():
        return out / "model.nns", "nns"
    if isinstance(model, OrtInt8Module):
        path = out / "model-int8.onnx"
        if not path.is_file():
            model.save(path)
        return path, "int8-onnx"
    stages = sorted((out / "stages").glob("[0-9][0-9]-*.safetensors"))
    if not stages:
        raise FileNotFoundError(f"{out}: no stage checkpoint found (was the recipe run there?)")
    return stages[-1], "checkpoint"


def measure_run(
    result: Any, budget: Budget, example_inputs: Any, *, latency: bool = True
) -> tuple[Measurement, Path]:
    """Measure a :class:`~nnshrink.recipes.RunResult`: its artifact, the last row's headline
    value (``result.task.headline``), MACs and latency (on the CPU, where budgets deploy).

    Returns ``(measurement, artifact path)``.
    """
    artifact, kind = artifact_of(result.out_dir, result.model)
    macs = None
    model = result.model
    if isinstance(model, OrtInt8Module):
        # The runner counts no MACs inside an ONNX Runtime session: use the float graph's.
        macs = next((r["macs"] for r in reversed(result.rows) if r.get("macs")), None)
    else:
        model = model.cpu()
    measurement = measure_model(
        model, budget, example_inputs, artifact=artifact, bytes_kind=kind,
        score=result.rows[-1].get(result.task.headline), macs=macs, latency=latency,
    )  # fmt: skip
    return measurement, artifact


def apply_stages(
    model: nn.Module, stages: Sequence[dict[str, Any]], calibration: Any
) -> tuple[nn.Module, nn.Module, bool]:
    """Apply the technique stages of a candidate to a copy of ``model``, skipping training.

    Returns ``(model, last float model, encode)``: the result (maybe an int8 session), the last
    PyTorch model before it (for MACs and encoding), and the ``encode`` stage's options (``None``
    without one).
    """
    from ..recipes.schema import _register_techniques

    _register_techniques()
    model = copy.deepcopy(model)
    last_float = model
    encode: dict[str, Any] | None = None
    for stage in stages:
        ((name, body),) = stage.items()
        if name == "encode":
            encode = dict(body or {})
        if name not in TECHNIQUE_STAGES:
            continue
        result = compress_(model, Config.from_dict(dict(body)), example_inputs=calibration)
        replacement = result.artifact or getattr(result.summary, "model", None)
        if isinstance(replacement, nn.Module):
            model = replacement
        if not isinstance(model, OrtInt8Module):
            last_float = model
    return model, last_float, encode


def zero_shot(
    model: nn.Module,
    stages: Sequence[dict[str, Any]],
    budget: Budget,
    *,
    calibration: Any,
    loader: Iterable[Any] | None = None,
    task: Any = None,
    latency: bool = True,
    runs: int = 10,
) -> Measurement:
    """Measure a candidate with its technique stages applied and no training at all.

    Args:
        model: the trained baseline (not modified).
        stages: the candidate's recipe stage dicts (training stages are skipped).
        budget: latency settings.
        calibration: an input batch (PTQ calibration, structural tracing, latency and MACs
            inputs), as the recipe runner passes it.
        loader: small evaluation set for the zero-shot score (``None``: not measured).
        task: the :class:`~nnshrink.train.task.Task` scoring it (default: top-1).
        latency: measure latency (needed when the budget limits it).
        runs: timed runs.
    """
    from ..binary import strip_low_bit
    from ..recipes.schema import EncodeStage
    from ..sharing import strip_sharing
    from ..storage import save as save_nns

    out, last_float, encode = apply_stages(model, stages, calibration)
    with tempfile.TemporaryDirectory() as tmp:
        if encode is not None:
            # the same call as the recipe runner's encode stage
            opts = EncodeStage.from_dict({"type": EncodeStage.kind, **encode})
            path, kind = Path(tmp) / "model.nns", "nns"
            save_nns(
                strip_low_bit(strip_sharing(copy.deepcopy(last_float))),
                path,
                huffman=opts.huffman,
                index_bits={"conv": opts.conv_index_bits, "fc": opts.fc_index_bits},
            )
        elif isinstance(out, OrtInt8Module):
            path, kind = Path(tmp) / "model-int8.onnx", "int8-onnx"
            out.save(path)
        else:
            from ..io import save_checkpoint

            path, kind = Path(tmp) / "model.safetensors", "checkpoint"
            save_checkpoint(out, path)
        return measure_model(
            out, budget, calibration, artifact=path, bytes_kind=kind, loader=loader, task=task,
            macs=macs_per_sample(last_float, calibration), latency=latency, runs=runs,
        )  # fmt: skip
