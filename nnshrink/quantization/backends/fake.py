"""The ``"fake"`` backend: integer weight storage and fake-quantized activations in PyTorch.

Every selected ``Conv*d`` / ``Linear`` (and GPT-2 ``Conv1D``, turned into the equivalent
``Linear``) is replaced in place by a :class:`QuantizedLayer`. While calibrating it observes its
input; after ``freeze`` it stores the weight as integer codes (int8 buffers, so the model really
is ~4x smaller in memory) and quantizes its input the way the chosen mode does: with the
calibrated scale / zero-point (``static``), with the batch's own min-max range (``dynamic``, as
``DynamicQuantizeLinear`` does), or not at all (``weight-only``). Compute stays float, so this
backend is for accuracy studies at any bit width 2..8; the other backends run int8 kernels.

The frozen layer is also the *calibrated form* that the static int8 paths leave in the user's
model: int8 weights and the activation qparams of the runtime graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core import set_submodule
from ..fold import fold_batchnorm
from ..int8_linear import dequantize_codes, is_conv1d, linear_parts, weight_codes
from ..observers import Observer, make_observer
from ..primitives import dequantize, fake_quantize, minmax_qparams, qparams_from_range, quantize
from ..select import CONV_TYPES as _CONVS
from ..select import disable_fused_fast_paths, quantizable_layers
from .base import Backend, Calibrator, register_backend

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
ACT_MODES = ("static", "dynamic", "none")


def as_linear(module: nn.Module) -> nn.Module:
    """``module`` itself, or for a GPT-2 ``Conv1D`` the equivalent ``nn.Linear`` (weight (out, in)).

    Example:
        >>> as_linear(nn.Linear(2, 3)).weight.shape
        torch.Size([3, 2])
    """
    if not is_conv1d(module):
        return module
    weight, bias = linear_parts(module)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


class QuantizedLayer(nn.Module):
    """A Conv*d / Linear with quantized weight and input activation.

    Args:
        layer: the float layer (kept as ``self.layer``; its weight is replaced by codes on freeze).
        bits: bit width of weights and activations.
        observer: activation observer used while calibrating (``None`` to set qparams directly).
        per_channel: per-output-channel weight scales.
        symmetric_weights: signed symmetric weight codes (else unsigned affine).
        symmetric_activations: signed symmetric activation codes (else unsigned affine).
        act_mode: ``"static"`` (calibrated qparams), ``"dynamic"`` (each batch's min-max range)
            or ``"none"`` (float activations: weight-only).
        group_size: weight scales per group of this many inputs (Linear, symmetric weights;
            0: per channel / per tensor as ``per_channel`` says).

    Example:
        >>> q = QuantizedLayer(nn.Linear(4, 2), 8, make_observer("minmax"))
        >>> _ = q(torch.randn(3, 4)); q.freeze(); q.weight_q.dtype
        torch.int8
    """

    quantized_wrapper = True  # its .layer is not a candidate for quantizing again

    def __init__(
        self,
        layer: nn.Module,
        bits: int = 8,
        observer: Observer | None = None,
        per_channel: bool = True,
        symmetric_weights: bool = True,
        symmetric_activations: bool = False,
        act_mode: str = "static",
        group_size: int = 0,
    ) -> None:
        super().__init__()
        layer = as_linear(layer)
        if not isinstance(layer, _LAYERS):
            raise TypeError(
                f"QuantizedLayer wraps Conv1d/2d/3d, Linear or GPT-2 Conv1D, got "
                f"{type(layer).__name__}"
            )
        if act_mode not in ACT_MODES:
            raise ValueError(f"act_mode must be one of {ACT_MODES}, got {act_mode!r}")
        if group_size and not (isinstance(layer, nn.Linear) and symmetric_weights):
            raise ValueError("group_size needs a Linear layer and symmetric weights")
        self.layer = layer
        self.bits = bits
        self.observer = observer
        self.per_channel = per_channel
        self.symmetric_weights = symmetric_weights
        self.symmetric_activations = symmetric_activations
        self.act_mode = act_mode
        self.group_size = group_size
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.frozen:
            if self.observer is not None:
                self.observer.update(x)
            return self.layer(x)
        if self.act_mode == "static":
            x = fake_quantize(
                x, self.act_scale, self.act_zero_point, self.bits, self.symmetric_activations
            )
        elif self.act_mode == "dynamic":
            scale, zero = qparams_from_range(
                x.detach().min(), x.detach().max(), self.bits, self.symmetric_activations
            )
            x = fake_quantize(x, scale, zero, self.bits, self.symmetric_activations)
        return self._run(x, self.dequantized_weight())

    @property
    def weight(self) -> torch.Tensor | None:
        """The float weight the layer computes with (dequantized once frozen)."""
        return self.dequantized_weight() if self.frozen else self.layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The wrapped layer's bias."""
        return self.layer.bias

    def macs(self, inputs: Any, output: torch.Tensor) -> int:
        """Multiply-accumulates of one call (read by ``nnshrink.metrics``): the wrapped layer's."""
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return output.numel() * layer.in_features
        kernel = 1
        for k in layer.kernel_size:
            kernel *= k
        return output.numel() * (layer.in_channels // layer.groups) * kernel

    def _run(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the layer computes with (codes times scale)."""
        if self.group_size:
            return dequantize_codes(self.weight_q, self.weight_scale, self.group_size)
        axis = 0 if self.per_channel else None
        return dequantize(self.weight_q, self.weight_scale, self.weight_zero_point, axis)

    def freeze(
        self,
        act_scale: torch.Tensor | None = None,
        act_zero_point: torch.Tensor | None = None,
        weight_scale: torch.Tensor | None = None,
        weight_zero_point: torch.Tensor | None = None,
    ) -> None:
        """Quantize the weight to codes and fix the activation qparams.

        Args:
            act_scale, act_zero_point: activation qparams (default: from the observer).
            weight_scale, weight_zero_point: weight qparams (default: min-max of the weight).
        """
        if act_scale is None and self.act_mode == "static":
            if self.observer is None:
                raise ValueError("freeze() needs act_scale/act_zero_point or an observer")
            act_scale, act_zero_point = self.observer.qparams()
        elif act_scale is None:  # dynamic / weight-only: no calibrated activation range
            act_scale, act_zero_point = torch.tensor(1.0), torch.tensor(0)
        weight = self.layer.weight.detach()
        axis = 0 if self.per_channel else None
        if self.group_size:
            codes, scale = weight_codes(weight, self.bits, self.group_size)
            self.register_buffer("weight_q", codes)
            self.register_buffer("weight_scale", scale)
            self.register_buffer("weight_zero_point", torch.zeros((), dtype=torch.int64))
        elif weight_scale is None:
            scale, zp = minmax_qparams(weight, self.bits, self.symmetric_weights, axis)
        else:
            scale = torch.as_tensor(weight_scale, dtype=torch.float32).detach().clone()
            zp = torch.as_tensor(weight_zero_point, dtype=torch.int64).clone()
        if not self.group_size:
            self.register_buffer(
                "weight_q", quantize(weight, scale, zp, self.bits, self.symmetric_weights, axis)
            )
            self.register_buffer("weight_scale", scale)
            self.register_buffer("weight_zero_point", zp)
        self.register_buffer("act_scale", torch.as_tensor(act_scale, dtype=torch.float32).clone())
        self.register_buffer(
            "act_zero_point", torch.as_tensor(act_zero_point, dtype=torch.int64).clone()
        )
        del self.layer.weight  # the codes replace the float weight
        self.layer.weight = None
        self.observer = None
        self.frozen = True

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, act_mode={self.act_mode}, per_channel={self.per_channel}, "
            f"group_size={self.group_size}, frozen={self.frozen}"
        )


class FakeCalibrator(Calibrator):
    """Calibrates the swapped-in :class:`QuantizedLayer` modules of a model edited in place."""

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        folded: list[Any],
        skipped: dict[str, str] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.model = model
        self.names = names
        self.folded = folded
        self.skipped = dict(skipped or {})
        self.notes = list(notes or [])

    def observe(self, *inputs: torch.Tensor) -> None:  # noqa: D102
        with torch.no_grad():
            self.model(*inputs)

    def convert(self) -> nn.Module:  # noqa: D102
        for name in self.names:
            self.model.get_submodule(name).freeze()
        return self.model

    def rows(self) -> list[dict[str, Any]]:  # noqa: D102
        out = []
        for name in self.names:
            q = self.model.get_submodule(name)
            if not q.frozen:
                continue
            row = {
                "name": name,
                "type": type(q.layer).__name__,
                "bits": q.bits,
                "act_mode": q.act_mode,
                "kernel": "simulated (float compute)",
                "weight_bytes": q.weight_q.numel() * q.weight_q.element_size(),
            }
            if q.act_mode == "static":
                row.update(act_scale=float(q.act_scale), act_zero_point=int(q.act_zero_point))
            out.append(row)
        return out


def swap_in_quantized_layers(
    model: nn.Module,
    config: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    *,
    act_mode: str = "static",
    convs: bool = True,
) -> tuple[list[str], dict[str, str], list[str]]:
    """Replace the selected layers by observing :class:`QuantizedLayer` modules, in place.

    Args:
        model: the model (BN already folded when wanted).
        config: a ``PTQ`` config (bits, observer, weight options, layer selection).
        filter_fn: ``(module, name) -> bool`` from ``compress_``.
        act_mode: ``static`` / ``dynamic`` / ``none`` (see :class:`QuantizedLayer`).
        convs: quantize Conv layers too.

    Returns:
        ``(replaced names, {skipped name: reason}, names of fused fast paths turned off)``.
    """
    layers, skipped = quantizable_layers(model, config, filter_fn, convs=convs)
    if not layers:
        raise ValueError(
            "no Conv/Linear layer to quantize (check include/exclude/per_layer/filter_fn)"
            + (f"; skipped: {skipped}" if skipped else "")
        )
    group = getattr(config, "resolved_group_size", lambda: 0)() if act_mode == "none" else 0
    for layer in layers:
        bits = layer.get("bits", config.bits)
        observer = None
        if act_mode == "static":
            observer = make_observer(
                config.observer,
                bits=bits,
                symmetric=config.symmetric_activations,
                percentile=config.percentile,
            )
        module = QuantizedLayer(
            layer.module,
            bits,
            observer,
            config.per_channel,
            config.symmetric_weights,
            config.symmetric_activations,
            act_mode=act_mode,
            group_size=group if not isinstance(layer.module, _CONVS) else 0,
        )
        set_submodule(model, layer.name, module)
    names = [layer.name for layer in layers]
    return names, skipped, disable_fused_fast_paths(model, names)


@register_backend("fake")
class FakeBackend(Backend):
    """Swap layers for :class:`QuantizedLayer` in place (BN folded first if ``config.fold_bn``)."""

    def prepare(
        self,
        model: nn.Module,
        config: Any,
        example_inputs: tuple[torch.Tensor, ...] | None,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> FakeCalibrator:  # noqa: D102
        model.eval()
        folded = fold_batchnorm(model) if config.fold_bn else []
        mode = getattr(config, "mode", "static")
        act_mode = {"static": "static", "dynamic": "dynamic", "weight-only": "none"}[mode]
        names, skipped, notes = swap_in_quantized_layers(
            model, config, filter_fn, act_mode=act_mode, convs=mode == "static"
        )
        return FakeCalibrator(model, names, folded, skipped, notes)
