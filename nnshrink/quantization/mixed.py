"""Mixed precision: per-layer weight bit widths from a sensitivity measure under a size budget.

1. :func:`layer_sensitivity` measures, for each layer and each candidate bit width, the damage of
   quantizing *only that layer*: the model-output MSE on example inputs, or the drop of any
   score (the user's metric), both through the shared scan :func:`nnshrink.core.scan_layers`
   that the pruning and advisor tables use; without inputs, the weight quantization error
   ``||W - Q(W)||^2``.
2. :func:`allocate_bits` (pure) starts every layer at the widest choice and greedily lowers the
   layer whose next step down costs the least extra sensitivity per bit saved, until the weights
   fit the budget (a HAQ-style search replaced by a greedy, as in AIMET's AMP).
3. The ``MixedPrecision`` config (``bits``: the average; ``avg_bits`` is its deprecated name)
   applies the result: weights are fake-quantized per layer (float
   storage holding values on each layer's grid; pack them with the storage codecs for real bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..core import (
    Config,
    ConfigError,
    LayerSelection,
    as_input_tuple,
    eval_mode,
    named_layers,
    register_handler,
    scan_layers,
)
from .primitives import dequantize, minmax_qparams, quantize


def allocate_bits(
    sensitivity: Mapping[str, Mapping[int, float]],
    sizes: Mapping[str, int],
    budget_bits: float,
) -> dict[str, int]:
    """Greedy bit allocation: minimise total sensitivity subject to ``sum(bits * size) <= budget``.

    Args:
        sensitivity: ``{layer: {bits: cost}}``; every layer lists the same or different choices.
        sizes: ``{layer: number of weights}``.
        budget_bits: total weight bits allowed.

    Returns:
        ``{layer: bits}``.

    Raises:
        ValueError: when even the narrowest choices exceed the budget.

    Example:
        >>> sens = {"a": {8: 0.0, 4: 1.0}, "b": {8: 0.0, 4: 0.1}}
        >>> allocate_bits(sens, {"a": 100, "b": 100}, budget_bits=1200)
        {'a': 8, 'b': 4}
    """
    choices = {name: sorted(sensitivity[name], reverse=True) for name in sizes}
    floor = sum(min(choices[n]) * sizes[n] for n in sizes)
    if floor > budget_bits:
        raise ValueError(
            f"budget of {budget_bits:.0f} bits is below the smallest reachable size {floor} bits; "
            "add narrower bit choices or raise the budget"
        )
    level = {name: 0 for name in sizes}
    total = sum(choices[n][0] * sizes[n] for n in sizes)
    while total > budget_bits:
        best, best_cost = None, float("inf")
        for name in sizes:
            i = level[name]
            if i + 1 >= len(choices[name]):
                continue
            hi, lo = choices[name][i], choices[name][i + 1]
            saved = (hi - lo) * sizes[name]
            cost = (sensitivity[name][lo] - sensitivity[name][hi]) / max(saved, 1)
            if cost < best_cost:
                best, best_cost = name, cost
        if best is None:  # unreachable given the floor check
            break
        i = level[best]
        total -= (choices[best][i] - choices[best][i + 1]) * sizes[best]
        level[best] = i + 1
    return {name: choices[name][level[name]] for name in sizes}


def quantize_weight(weight: torch.Tensor, bits: int, per_channel: bool = True) -> torch.Tensor:
    """Symmetric min-max quantize-dequantize of a weight (per output channel by default)."""
    axis = 0 if per_channel else None
    scale, zp = minmax_qparams(weight, bits, True, axis)
    return dequantize(quantize(weight, scale, zp, bits, True, axis), scale, zp, axis).to(
        weight.dtype
    )


def output_error(model: nn.Module, example_inputs: Any) -> Callable[[nn.Module], float]:
    """``copy -> mean squared error`` of a copy's output against ``model``'s on the inputs.

    The reference is computed now, in eval mode, so every trial is compared with the same
    float output.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> output_error(m, torch.randn(3, 2))(m)
        0.0
    """
    inputs = as_input_tuple(example_inputs)
    with eval_mode(model), torch.no_grad():
        ref = model(*inputs)

    def error(trial: nn.Module) -> float:
        with torch.no_grad():
            return float((trial(*inputs) - ref).double().pow(2).mean())

    return error


def weight_edit(per_channel: bool = True):
    """The scan's edit: quantize-dequantize one layer's weight at ``bits`` (in place)."""

    def edit(trial: nn.Module, name: str, bits: int) -> None:
        weight = trial.get_submodule(name).weight
        with torch.no_grad():
            weight.copy_(quantize_weight(weight, bits, per_channel))

    return edit


def layer_sensitivity(
    model: nn.Module,
    bit_choices: Sequence[int] = (2, 3, 4, 5, 6, 8),
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    per_channel: bool = True,
    score: Callable[[nn.Module], float] | None = None,
    higher_is_better: bool | Callable[[], bool] = False,
) -> dict[str, dict[int, float]]:
    """Per-layer, per-bit-width damage of quantizing that layer's weights alone.

    With inputs (or a ``score``) this is the shared scan :func:`nnshrink.core.scan_layers`
    with a weight-quantization edit, the same loop the pruning and advisor tables run; without
    either, the cost is the weight quantization error ``||W - Q(W)||^2`` (no forward pass).

    Args:
        model: float model (not modified).
        bit_choices: candidate widths.
        example_inputs: inputs for the output-MSE measure; ``None`` (and no ``score``) uses
            the weight error.
        filter_fn: which Conv/Linear layers to include.
        per_channel: per-channel weight scales.
        score: ``model -> float`` to use instead of the output error, e.g.
            ``nnshrink.core.task_score(task, loader)`` for the user's metric.
        higher_is_better: direction of ``score`` (costs are then its drop from the baseline).

    Returns:
        ``{layer: {bits: cost}}`` (the cost is larger where the damage is larger).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> sens = layer_sensitivity(m, (2, 8), example_inputs=torch.randn(8, 4))
        >>> sens["0"][2] >= sens["0"][8] >= 0
        True
    """
    names = [name for name, _ in named_layers(model, (nn.Conv2d, nn.Linear), filter_fn)]
    if score is None and example_inputs is None:
        out: dict[str, dict[int, float]] = {}
        for name in names:
            original = model.get_submodule(name).weight.detach()
            out[name] = {
                bits: float((original - quantize_weight(original, bits, per_channel))
                            .double().pow(2).sum())
                for bits in bit_choices
            }  # fmt: skip
        return out
    if score is None:
        score, higher_is_better = output_error(model, example_inputs), False
    scan = scan_layers(model, weight_edit(per_channel), bit_choices, score=score, layers=names,
                       higher_is_better=higher_is_better, restore="state")  # fmt: skip
    drops = scan.drops()  # output error: the error itself (its baseline is 0); a metric: its drop
    return {name: dict(zip(scan.settings, drops[name])) for name in names}


@dataclasses.dataclass(frozen=True)
class MixedPrecision(Config, LayerSelection):
    """Per-layer weight bit widths chosen greedily under an average-bits budget.

    Args:
        bits: budget as average bits per weight over the selected layers (was ``avg_bits``).
        choices: candidate bit widths (2..8).
        per_channel: per-channel weight scales.
        include, exclude, per_layer: layer selection; a number in ``per_layer`` fixes that
            layer's width (it still counts in the budget), ``None`` leaves the layer in float.

    Example:
        >>> Config.from_dict(MixedPrecision(bits=4.0).to_dict()) == MixedPrecision(bits=4.0)
        True
    """

    kind: ClassVar[str] = "mixed-precision"
    renamed: ClassVar[dict[str, Any]] = {"avg_bits": "bits"}
    amount_field: ClassVar[str] = "bits"
    bits: float = 6.0
    choices: tuple[int, ...] = (2, 3, 4, 5, 6, 8)
    per_channel: bool = True

    def validate(self) -> None:  # noqa: D102
        if not self.choices or any(not 2 <= b <= 8 for b in self.choices):
            raise ConfigError(
                f"mixed-precision.choices must be bit widths in [2, 8], got {self.choices}"
            )
        if not min(self.choices) <= self.bits <= 32:
            raise ConfigError(
                f"mixed-precision.bits (the average) must be >= the narrowest choice "
                f"{min(self.choices)}, got {self.bits}"
            )

    @property
    def avg_bits(self) -> float:
        """Deprecated name of :attr:`bits`."""
        return self.bits


@register_handler(MixedPrecision)
def _apply(
    model: nn.Module,
    config: MixedPrecision,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[dict[str, Any]]:
    """Measure sensitivities, allocate bits, fake-quantize each layer's weight in place.

    Returns one row per layer: ``name``, ``bits``, ``params``, ``sensitivity``.
    """
    selected = config.select(
        named_layers(model, (nn.Conv2d, nn.Linear)), filter_fn=filter_fn, amount_field="bits"
    )
    if not selected:
        raise ValueError("no Conv2d/Linear layer selected (check include/exclude/per_layer)")
    fixed = {layer.name: int(layer.overrides["bits"]) for layer in selected
             if "bits" in layer.overrides}  # fmt: skip
    for name, b in fixed.items():
        if not 2 <= b <= 8:
            raise ConfigError(f"mixed-precision.per_layer[{name!r}]: bits must be in [2, 8]")
    names = {layer.name for layer in selected}
    searched = names - set(fixed)
    sens = layer_sensitivity(model, config.choices, example_inputs,
                             lambda m, n: n in searched, config.per_channel)  # fmt: skip
    layers = {layer.name: layer.module for layer in selected}
    sizes = {name: layers[name].weight.numel() for name in names}
    budget = config.bits * sum(sizes.values()) - sum(b * sizes[n] for n, b in fixed.items())
    bits = allocate_bits(sens, {n: sizes[n] for n in sens}, budget) if sens else {}
    bits.update(fixed)
    rows = []
    with torch.no_grad():
        for name in (layer.name for layer in selected):
            b = bits[name]
            weight = layers[name].weight
            weight.copy_(quantize_weight(weight, b, config.per_channel))
            cost = sens[name][b] if name in sens else None
            rows.append({"name": name, "bits": b, "params": sizes[name], "sensitivity": cost})
    return rows
