"""Mixed precision: per-layer weight bit widths from a sensitivity measure under a size budget.

1. :func:`layer_sensitivity` measures, for each layer and each candidate bit width, the damage of
   quantizing *only that layer*: the model-output MSE on example inputs (or, without inputs, the
   weight quantization error ``||W - Q(W)||^2``).
2. :func:`allocate_bits` (pure) starts every layer at the widest choice and greedily lowers the
   layer whose next step down costs the least extra sensitivity per bit saved, until the weights
   fit the budget (a HAQ-style search replaced by a greedy, as in AIMET's AMP).
3. The ``MixedPrecision`` config (``bits``: the average; ``avg_bits`` is its deprecated name)
   applies the result: weights are fake-quantized per layer (float
   storage holding values on each layer's grid; pack them with the storage codecs for real bytes).
"""

from __future__ import annotations

import copy
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
    named_layers,
    register_handler,
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


def layer_sensitivity(
    model: nn.Module,
    bit_choices: Sequence[int] = (2, 3, 4, 5, 6, 8),
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    per_channel: bool = True,
) -> dict[str, dict[int, float]]:
    """Per-layer, per-bit-width damage of quantizing that layer's weights alone.

    Args:
        model: float model (not modified).
        bit_choices: candidate widths.
        example_inputs: inputs for the output-MSE measure; ``None`` uses the weight error.
        filter_fn: which Conv/Linear layers to include.
        per_channel: per-channel weight scales.

    Returns:
        ``{layer: {bits: cost}}``.
    """
    model = copy.deepcopy(model).eval()
    inputs = None if example_inputs is None else as_input_tuple(example_inputs)
    ref = None
    if inputs is not None:
        with torch.no_grad():
            ref = model(*inputs)
    out: dict[str, dict[int, float]] = {}
    for name, layer in named_layers(model, (nn.Conv2d, nn.Linear), filter_fn):
        original = layer.weight.data.clone()
        out[name] = {}
        for bits in bit_choices:
            q = quantize_weight(original, bits, per_channel)
            if inputs is None:
                out[name][bits] = float((original - q).double().pow(2).sum())
                continue
            layer.weight.data.copy_(q)
            with torch.no_grad():
                out[name][bits] = float((model(*inputs) - ref).double().pow(2).mean())
            layer.weight.data.copy_(original)
    return out


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
