"""The ``"fake"`` backend: int8 weight storage and fake-quantized activations in PyTorch.

Every selected ``Conv*d`` / ``Linear`` is replaced in place by a :class:`QuantizedLayer`. While
calibrating it observes its input; after ``freeze`` it stores the weight as integer codes (int8
buffers, so the model really is ~4x smaller in memory) and fake-quantizes its input with the
calibrated scale / zero-point. Compute stays float, so this backend is for accuracy studies at any
bit width 2..8; use ``"onnxruntime"`` for int8 speed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...core import named_layers, set_submodule
from ..fold import fold_batchnorm
from ..observers import Observer, make_observer
from ..primitives import dequantize, fake_quantize, minmax_qparams, quantize
from .base import Backend, Calibrator, register_backend

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class QuantizedLayer(nn.Module):
    """A Conv*d / Linear with quantized weight and input activation.

    Args:
        layer: the float layer (kept as ``self.layer``; its weight is replaced by codes on freeze).
        bits: bit width of weights and activations.
        observer: activation observer used while calibrating (``None`` to set qparams directly).
        per_channel: per-output-channel weight scales.
        symmetric_weights: signed symmetric weight codes (else unsigned affine).
        symmetric_activations: signed symmetric activation codes (else unsigned affine).

    Example:
        >>> q = QuantizedLayer(nn.Linear(4, 2), 8, make_observer("minmax"))
        >>> _ = q(torch.randn(3, 4)); q.freeze(); q.weight_q.dtype
        torch.int8
    """

    def __init__(
        self,
        layer: nn.Module,
        bits: int = 8,
        observer: Observer | None = None,
        per_channel: bool = True,
        symmetric_weights: bool = True,
        symmetric_activations: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(layer, _LAYERS):
            raise TypeError(
                f"QuantizedLayer wraps Conv1d/2d/3d or Linear, got {type(layer).__name__}"
            )
        self.layer = layer
        self.bits = bits
        self.observer = observer
        self.per_channel = per_channel
        self.symmetric_weights = symmetric_weights
        self.symmetric_activations = symmetric_activations
        self.frozen = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.frozen:
            if self.observer is not None:
                self.observer.update(x)
            return self.layer(x)
        x = fake_quantize(
            x, self.act_scale, self.act_zero_point, self.bits, self.symmetric_activations
        )
        return self._run(x, self.dequantized_weight())

    def _run(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the layer computes with (codes times scale)."""
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
        if act_scale is None:
            if self.observer is None:
                raise ValueError("freeze() needs act_scale/act_zero_point or an observer")
            act_scale, act_zero_point = self.observer.qparams()
        weight = self.layer.weight.detach()
        axis = 0 if self.per_channel else None
        if weight_scale is None:
            scale, zp = minmax_qparams(weight, self.bits, self.symmetric_weights, axis)
        else:
            scale = torch.as_tensor(weight_scale, dtype=torch.float32).detach().clone()
            zp = torch.as_tensor(weight_zero_point, dtype=torch.int64).clone()
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
        return f"bits={self.bits}, per_channel={self.per_channel}, frozen={self.frozen}"


class FakeCalibrator(Calibrator):
    """Calibrates the swapped-in :class:`QuantizedLayer` modules of a model edited in place."""

    def __init__(self, model: nn.Module, names: list[str], folded: list[Any]) -> None:
        self.model = model
        self.names = names
        self.folded = folded

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
            out.append(
                {
                    "name": name,
                    "type": type(q.layer).__name__,
                    "bits": q.bits,
                    "act_scale": float(q.act_scale),
                    "act_zero_point": int(q.act_zero_point),
                    "weight_bytes": q.weight_q.numel() * q.weight_q.element_size(),
                }
            )
        return out


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
        names = [name for name, _ in named_layers(model, _LAYERS, filter_fn)]
        if not names:
            raise ValueError("no Conv/Linear layer to quantize (check filter_fn)")
        for name in names:
            layer = model.get_submodule(name)
            observer = make_observer(
                config.observer,
                bits=config.bits,
                symmetric=config.symmetric_activations,
                percentile=config.percentile,
            )
            set_submodule(
                model,
                name,
                QuantizedLayer(
                    layer,
                    config.bits,
                    observer,
                    config.per_channel,
                    config.symmetric_weights,
                    config.symmetric_activations,
                ),
            )
        return FakeCalibrator(model, names, folded)
