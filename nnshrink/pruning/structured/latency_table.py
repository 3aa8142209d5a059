"""Kept channel counts chosen from a measured per-layer latency table.

MACs are not time: a 3x3 conv with 22 output channels can be slower than one with 32, because
the kernels tile channels in blocks (``benchmarks/structured_resnet20_latency.py`` shows the
stage-2 convs of a channel-pruned ResNet-20 at 22-23 channels running at 0.92-0.99x of the dense
ones). ``round_to`` guesses the block size; this module measures it instead, the way
latency-aware pruners do (HALP, Shen et al. 2022, build a per-layer latency lookup table and
prune against it):

* :class:`LatencyTable` times each ``nn.Conv2d`` / ``nn.Linear`` *alone*, rebuilt at the channel
  counts asked for, on an input of the shape it receives in the model (recorded once from
  ``example_inputs``, so the batch size is the one deployed), in eager PyTorch or ONNX Runtime.
  Entries are cached per layer signature, so equal layers are timed once.
* :func:`choose_counts` rounds every channel group's planned count to the nearest *top of a
  step* of its layers' measured time: the last count before the time rises. Where 17 to 24
  channels cost the same, 18 planned becomes 16 and 22 becomes 24; where time grows smoothly
  with the channels, the planned count stays. It is ``round_to`` with the block size measured
  per layer instead of guessed, and like ``round_to`` it moves counts both ways, so MACs stay
  near the plan's.

Only the layers a group edits directly are timed; elementwise ops (BatchNorm, activations) scale
with the channels and are left out. Heads keep their planned counts.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 24, 3), nn.ReLU(), nn.Conv2d(24, 8, 3))
    >>> table = LatencyTable(model, torch.zeros(2, 3, 16, 16), runs=3)
    >>> table.layer_ms("0", c_in=3, c_out=16) > 0
    True
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nnshrink.core.modules import forward_with_hooks

from ..select import _min_keep, _num_blocks, allowed_keep, topk_keep
from .graph import UnsupportedModelError
from .group import Group

__all__ = [
    "LatencyTable",
    "choose_counts",
    "count_window",
    "measure_ms",
    "sparsity_for_latency",
    "step_tops",
]


def measure_ms(model: nn.Module, example_inputs: Any, runtime: str, runs: int = 20) -> float:
    """Median milliseconds of one forward pass of ``model`` (eval mode) on ``example_inputs``.

    At the thread count ``torch`` uses now, so that the target means the user's setting.
    """
    from nnshrink.metrics import measure_latency  # (metrics imports the model zoo: lazily)

    stats = measure_latency(model, example_inputs, runtime=runtime,
                            threads=torch.get_num_threads(), runs=runs, warmup=5)  # fmt: skip
    return float(stats.median_ms)


def _dims(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    return module.in_features, module.out_features


def _depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def _timeable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and (module.groups == 1 or _depthwise(module))


class LatencyTable:
    """Measured milliseconds of single layers at given channel counts (a lookup table).

    Args:
        model: the model; each ``Conv2d`` (ungrouped or depthwise) and ``Linear`` it calls is
            recorded with the shape of its input on ``example_inputs``.
        example_inputs: one batch at the deployed batch size.
        runtime: ``"eager"`` or ``"onnxruntime"`` (each entry then times an exported layer).
        runs: timed calls per entry (median).

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
        >>> table = LatencyTable(model, torch.zeros(16, 8), runs=3)
        >>> table.layer_ms("2", c_in=20, c_out=4) > 0
        True
    """

    def __init__(
        self, model: nn.Module, example_inputs: Any, runtime: str = "eager", runs: int = 25
    ) -> None:
        self.runtime = runtime
        self.runs = runs
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.layers: dict[str, nn.Module] = {}
        self._cache: dict[tuple[Any, ...], float] = {}
        self.record(model, example_inputs)

    def record(self, model: nn.Module, example_inputs: Any) -> None:
        """Record the input shape of every timeable layer (one eval-mode forward pass)."""
        names = {m: n for n, m in model.named_modules() if _timeable(m)}
        seen: dict[str, tuple[int, ...]] = {}

        def hook(module: nn.Module, args: Any) -> None:
            if args and torch.is_tensor(args[0]) and names[module] not in seen:
                seen[names[module]] = tuple(args[0].shape)

        handles = [m.register_forward_pre_hook(hook) for m in names]
        forward_with_hooks(model, example_inputs, handles)
        self.shapes.update(seen)
        self.layers.update({n: m for m, n in names.items() if n in seen})

    def knows(self, name: str) -> bool:
        """Whether ``name`` is a layer this table can time."""
        return name in self.shapes

    def layer_ms(self, name: str, c_in: int, c_out: int) -> float:
        """Median ms of layer ``name`` rebuilt with ``c_in`` inputs and ``c_out`` outputs."""
        module, shape = self.layers[name], self.shapes[name]
        if _depthwise(module):
            c_in = c_out = min(c_in, c_out)
        if isinstance(module, nn.Conv2d):
            sig = ("conv", module.kernel_size, module.stride, module.padding, module.dilation,
                   _depthwise(module), module.bias is not None, module.padding_mode)  # fmt: skip
            in_shape = (shape[0], c_in, *shape[2:])
        else:
            sig = ("linear", module.bias is not None)
            in_shape = (*shape[:-1], c_in)
        key = (sig, in_shape, c_out, self.runtime, torch.get_num_threads())
        if key not in self._cache:
            self._cache[key] = self._time(module, in_shape, c_in, c_out)
        return self._cache[key]

    def _time(self, module: nn.Module, in_shape: tuple[int, ...], c_in: int, c_out: int) -> float:
        if isinstance(module, nn.Conv2d):
            layer: nn.Module = nn.Conv2d(
                c_in, c_out, module.kernel_size, module.stride, module.padding, module.dilation,
                groups=c_in if _depthwise(module) else 1, bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )  # fmt: skip
        else:
            layer = nn.Linear(c_in, c_out, bias=module.bias is not None)
        weight = next(module.parameters())
        layer = layer.to(weight.device, weight.dtype)
        x = torch.randn(in_shape, device=weight.device, dtype=weight.dtype)
        return measure_ms(layer, x, self.runtime, runs=self.runs)


def count_window(planned: int, size: int, lowest: int = 1) -> tuple[int, int]:
    """Counts :func:`choose_counts` considers for a group planned at ``planned`` of ``size``
    channels: ``planned -+ max(16, planned // 4)``, within ``[lowest, size]``. 16 is the
    widest step measured here (fp32 3x3 convs in eager PyTorch take one step per 16 channels,
    ``benchmarks/structured_resnet20_latency.py``), so the window reaches the end of the step
    the planned count is on.

    Example:
        >>> count_window(22, 64), count_window(100, 128)
        ((6, 38), (75, 125))
    """
    width = max(16, planned // 4)
    return max(lowest, planned - width), min(size, planned + width)


def step_tops(costs: dict[int, float], tolerance: float) -> list[int]:
    """Counts at the top of a step of the measured cost: the last count before the time has
    risen by more than ``tolerance`` (ms) since the step began, and the largest count. The cost
    is first made non-decreasing (``min`` over all larger counts): a count slower than a larger
    one is never worth keeping. A smooth cost has a top every few counts, a staircase one at
    the end of each flat run.

    Example:
        >>> step_tops({8: 1.0, 12: 2.0, 16: 2.0, 20: 3.0, 24: 2.9}, 0.1)
        [8, 16, 24]
        >>> step_tops({c: 0.05 * c for c in range(10, 17)}, 0.12)
        [12, 15, 16]
    """
    counts = sorted(costs)
    envelope, best = {}, float("inf")
    for c in reversed(counts):
        best = min(best, costs[c])
        envelope[c] = best
    tops, base = [], envelope[counts[0]]
    for a, b in zip(counts, counts[1:]):
        if envelope[b] > base + tolerance:  # the rise since this step began: small rises add up
            tops.append(a)
            base = envelope[b]
    return [*tops, counts[-1]]


def choose_counts(
    groups: Sequence[Group],
    kept: Sequence[torch.Tensor],
    scores: Sequence[torch.Tensor],
    table: LatencyTable,
    *,
    round_to: int = 1,
    tolerance: float = 0.1,
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Round each channel group's kept count to the nearest top of a step in its measured time
    (ties keep more); the channels stay the best-scored ones.

    ``round_to=8`` rounds to the nearest multiple of 8, a guess at the kernels' block size; this
    rounds to the nearest count after which the group's layers (timed alone, from ``table``)
    get slower: the kept count sits at the end of a step, where one channel more would cost a
    step and fewer within the step would save nothing. Counts move by at most
    :func:`count_window`, in either direction, so MACs stay near the plan's. Groups are visited
    in order; each count is costed with the other groups at their counts so far.

    Args:
        groups: the plan's groups.
        kept: the planned kept indices per group.
        scores: the channel scores per group (higher is kept).
        table: the measured layer times.
        round_to: candidates are counts allowed by ``round_to`` (and the group's blocks).
        tolerance: a rise in time smaller than this fraction of the group's time at the planned
            count is noise, not a step (10 %: medians of single-layer timings here scatter by
            5-8 % along a flat step).

    Returns:
        ``(kept, rows)``: the new kept indices, and per re-costed group
        ``{"modules", "planned", "chosen", "ms_planned", "ms_chosen"}``.
    """
    counts = [int(k.numel()) for k in kept]
    # (layer, "in" | "out") -> [(group, positions of that dimension in the group)]
    touching: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for j, g in enumerate(groups):
        for e in g.edits:
            if e.dim in ("in", "out") and table.knows(e.name):
                touching.setdefault((e.name, e.dim), []).append((j, e.index.numel()))

    def dim_after(name: str, dim: str, override: tuple[int, int]) -> int:
        size = _dims(table.layers[name])[0 if dim == "in" else 1]
        for j, positions in touching.get((name, dim), ()):
            count = override[1] if override[0] == j else counts[j]
            size -= round(positions * (groups[j].size - count) / groups[j].size)
        return max(1, size)

    new_kept, rows = list(kept), []
    for i, g in enumerate(groups):
        timed = sorted({e.name for e in g.edits if e.dim in ("in", "out") and table.knows(e.name)})
        if g.kind == "heads" or not timed or counts[i] >= g.size:
            continue
        lo, hi = count_window(counts[i], g.size, _min_keep(g.size, g.fixed, g.blocks))
        candidates = sorted(
            {c for c in allowed_keep(g.size, round_to, _num_blocks(g.blocks)) if lo <= c <= hi}
            | {counts[i]}
        )

        def cost(c: int, i: int = i, timed: list[str] = timed) -> float:
            return sum(table.layer_ms(n, dim_after(n, "in", (i, c)), dim_after(n, "out", (i, c)))
                       for n in timed)  # fmt: skip

        costs = {c: cost(c) for c in candidates}
        tops = step_tops(costs, tolerance * costs[counts[i]])
        chosen = min(tops, key=lambda c: (abs(c - counts[i]), -c))
        rows.append({"modules": timed, "planned": counts[i], "chosen": chosen,
                     "ms_planned": costs[counts[i]], "ms_chosen": costs[chosen]})  # fmt: skip
        if chosen != counts[i]:
            new_kept[i] = topk_keep(scores[i], chosen, g.fixed, g.blocks)
            counts[i] = chosen
    return new_kept, rows


def sparsity_for_latency(
    pruner: Any, target_ms: float, iterations: int = 7, high: float = 0.9
) -> tuple[float, bool, dict[str, Any]]:
    """The smallest one-shot sparsity whose pruned copy runs in <= ``target_ms``
    (``StructuredPruning(target_latency_ms=...)``, for a :class:`~.pruner.StructuredPruner`).

    Bisection on ``[0, high]``: each trial prunes a deep copy of the model (the model itself
    is untouched) and times it with :func:`measure_ms`. Latency falls with sparsity only
    roughly (channel counts meet kernels unevenly), so the result is the best trial that met
    the target, and ``reached`` says whether any did.
    """
    cfg = pruner.config
    runtime = cfg.latency_runtime
    if isinstance(pruner.example_inputs, Mapping):
        raise ValueError(
            "target_latency_ms times the model on example_inputs given as a tensor or a "
            "tuple of positional tensors, not a dict of keyword inputs; pass them "
            "positionally (e.g. (input_ids, attention_mask)) or use target_macs / sparsity"
        )
    dense_ms = measure_ms(pruner.model, pruner.example_inputs, runtime)
    trials: list[dict[str, float]] = []
    if dense_ms <= target_ms:
        return 0.0, True, {"latency_ms_before": dense_ms, "latency_ms_after": dense_ms,
                           "latency_trials": trials}  # fmt: skip
    one_shot = dataclasses.replace(cfg, target_latency_ms=None, target_macs=None)

    def timed_trial(sparsity: float) -> float:
        trial = copy.deepcopy(pruner.model)
        trial_pruner = type(pruner)(trial, pruner.example_inputs,
                                    dataclasses.replace(one_shot, sparsity=sparsity),
                                    filter_fn=pruner.filter_fn)  # fmt: skip
        trial_pruner._table = pruner._table  # layer times measured once for all trials
        trial_pruner.prune()
        pruner._table = trial_pruner._table
        ms = measure_ms(trial, pruner.example_inputs, runtime)
        trials.append({"sparsity": round(sparsity, 4), "latency_ms": ms})
        return ms

    lo, hi, best = 0.0, high, None
    for _ in range(iterations):
        mid = (lo + hi) / 2
        try:
            ms = timed_trial(mid)
        except UnsupportedModelError:  # too sparse for this model: look lower
            hi = mid
            continue
        if ms <= target_ms:
            best, hi = (mid, ms), mid
        else:
            lo = mid
    if best is None:  # even the sparsest trial was too slow: take the sparsest
        best = (high, timed_trial(high))
        warnings.warn(
            f"target_latency_ms={target_ms:g} is out of reach: at sparsity {high} the model "
            f"still takes {best[1]:.3g} ms ({dense_ms:.3g} ms dense; per-op overhead does not "
            "shrink with the channels); pruned to that sparsity, target_reached=False",
            stacklevel=3,
        )
    return best[0], best[1] <= target_ms, {
        "latency_ms_before": dense_ms, "latency_ms_after": best[1], "latency_trials": trials,
    }  # fmt: skip
