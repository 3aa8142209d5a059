"""Quantization-aware training: fake-quantized Conv2d / Linear that you train in your own loop.

:class:`QATConv2d` and :class:`QATLinear` are ``nn.Conv2d`` / ``nn.Linear`` subclasses whose forward
fake-quantizes the weight (symmetric, per channel by default) and the input activation, with a
straight-through estimator. Two range policies:

* ``lsq=False``: weight scales from the current min-max, activation range from an exponential
  moving average of the batch min / max (updated in training mode only), as in Jacob et al. 2018;
* ``lsq=True``: learned step sizes (LSQ, Esser et al. 2020) for weights and activations, with
  gradient scale ``g = 1 / sqrt(N * Qp)`` and initial step ``2 * mean(|x|) / sqrt(Qp)``.

Workflow::

    compress_(model, QAT(bits=4, lsq=True))          # or prepare_qat(model, QAT(...))
    fit(model, loader, epochs=...)                   # any training loop; steps are parameters
    convert_qat(model)                               # frozen QuantizedLayer modules (int codes)

For int8 *execution* of an 8-bit QAT model, go through the PTQ artefact path:
``ns.finalize(model)`` (runs :func:`strip_qat`: float layers holding the weights already on the
int8 grid), then ``compress_(model, PTQ(), example_inputs=batches)``, whose ``result.artifact``
runs int8 kernels (activation ranges are recalibrated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core import (
    Config,
    ConfigError,
    LayerSelection,
    eval_mode,
    named_layers,
    register_handler,
    set_submodule,
)
from ..core.finalize import register_finalizer
from ..io import layer_kwargs, register_module
from .backends.fake import QuantizedLayer
from .fold import fold_batchnorm
from .primitives import (
    fake_quantize,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_init_step,
    minmax_qparams,
    qparams_from_range,
    qrange,
)


@dataclasses.dataclass(frozen=True)
class QAT(Config, LayerSelection):
    """Quantization-aware training of Conv2d / Linear layers (weights and input activations).

    Args:
        bits: bit width, 2..8 (``per_layer`` may give a layer its own).
        lsq: learn the step sizes (LSQ) instead of tracking min-max ranges.
        per_channel: per-output-channel weight quantization.
        averaging_constant: EMA constant of the activation range when ``lsq=False``.
        fold_bn: fold BatchNorm into the preceding layers before inserting fake-quant (the model
            is then trained without BN; leave False to keep BN during fine-tuning).

    Example:
        >>> Config.from_dict(QAT(bits=4, lsq=True).to_dict()) == QAT(bits=4, lsq=True)
        True
    """

    kind: ClassVar[str] = "qat"
    amount_field: ClassVar[str] = "bits"
    bits: int = 8
    lsq: bool = False
    per_channel: bool = True
    averaging_constant: float = 0.01
    fold_bn: bool = False

    def validate(self) -> None:  # noqa: D102
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ConfigError(f"qat.bits must be an integer in [2, 8], got {self.bits!r}")
        if not 0 < self.averaging_constant <= 1:
            raise ConfigError(
                f"qat.averaging_constant must be in (0, 1], got {self.averaging_constant}"
            )


class _QATMixin:
    """Fake-quant state shared by the QAT layers (weight and input activation)."""

    def __init__(
        self,
        *args: Any,
        bits: int = 8,
        lsq: bool = False,
        per_channel: bool = True,
        averaging_constant: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)  # the nn.Linear / nn.Conv2d next in the MRO
        self._init_qat(bits, lsq, per_channel, averaging_constant)

    @classmethod
    def from_float(
        cls,
        layer: nn.Module,
        bits: int = 8,
        lsq: bool = False,
        per_channel: bool = True,
        averaging_constant: float = 0.01,
    ) -> Any:
        """Build from a float ``nn.Linear`` / ``nn.Conv2d`` (weights copied)."""
        q = cls(**layer_kwargs(layer), device=layer.weight.device, dtype=layer.weight.dtype,
                bits=bits, lsq=lsq, per_channel=per_channel,
                averaging_constant=averaging_constant)  # fmt: skip
        q._copy_float(layer)
        return q

    def _init_qat(self, bits: int, lsq: bool, per_channel: bool, averaging_constant: float) -> None:
        self.bits = bits
        self.lsq = lsq
        self.per_channel = per_channel
        self.averaging_constant = averaging_constant
        self.register_buffer("act_min", torch.tensor(0.0))
        self.register_buffer("act_max", torch.tensor(0.0))
        self.register_buffer("act_initialized", torch.tensor(False))
        self.register_buffer("act_signed", torch.tensor(False))
        if lsq:
            _, qmax = qrange(bits, True)
            axis = 0 if per_channel else None
            self.weight_step = nn.Parameter(lsq_init_step(self.weight, qmax, axis))
            self.act_step = nn.Parameter(torch.tensor(1.0))

    def _copy_float(self, layer: nn.Module) -> None:
        with torch.no_grad():
            self.weight.copy_(layer.weight)
            if self.bias is not None:
                self.bias.copy_(layer.bias)
            if self.lsq:
                _, qmax = qrange(self.bits, True)
                self.weight_step.copy_(lsq_init_step(self.weight, qmax, self._weight_axis()))

    def _weight_axis(self) -> int | None:
        return 0 if self.per_channel else None

    def _act_range(self) -> tuple[int, int]:
        signed = bool(self.act_signed)
        return qrange(self.bits, signed)

    def quantized_weight(self) -> torch.Tensor:
        """Fake-quantized weight (differentiable)."""
        axis = self._weight_axis()
        if self.lsq:
            qmin, qmax = qrange(self.bits, True)
            g = lsq_grad_scale(self.weight[0].numel(), qmax)
            return lsq_fake_quantize(self.weight, self.weight_step, qmin, qmax, g, axis)
        scale, zp = minmax_qparams(self.weight.detach(), self.bits, True, axis)
        return fake_quantize(self.weight, scale, zp, self.bits, True, axis)

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantized input; initialises / updates the activation range."""
        if not bool(self.act_initialized):
            with torch.no_grad():
                self.act_signed.fill_(bool(x.min() < 0))
                self.act_min.fill_(float(x.min()))
                self.act_max.fill_(float(x.max()))
                if self.lsq:
                    _, qmax = self._act_range()
                    self.act_step.fill_(float(lsq_init_step(x, qmax)))
                self.act_initialized.fill_(True)
        elif self.training and not self.lsq:
            with torch.no_grad():
                c = self.averaging_constant
                self.act_min += c * (x.min() - self.act_min)
                self.act_max += c * (x.max() - self.act_max)
        if self.lsq:
            qmin, qmax = self._act_range()
            g = lsq_grad_scale(x[0].numel(), qmax)
            return lsq_fake_quantize(x, self.act_step, qmin, qmax, g)
        scale, zp = self.act_qparams()
        return fake_quantize(x, scale, zp, self.bits, False)

    def act_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current activation ``(scale, zero_point)``."""
        if self.lsq:
            return self.act_step.detach().abs(), torch.tensor(0)
        return qparams_from_range(self.act_min, self.act_max, self.bits, False)

    def weight_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current weight ``(scale, zero_point)``."""
        if self.lsq:
            step = self.weight_step.detach().abs()
            return step, torch.zeros_like(step, dtype=torch.int64)
        return minmax_qparams(self.weight.detach(), self.bits, True, self._weight_axis())


class QATConv2d(_QATMixin, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized weight and input (see module docstring).

    Takes ``nn.Conv2d``'s arguments plus ``bits``, ``lsq``, ``per_channel`` and
    ``averaging_constant``; :meth:`from_float` converts a trained layer.

    Example:
        >>> q = QATConv2d.from_float(nn.Conv2d(1, 4, 3), bits=4, lsq=True)
        >>> q(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 4, 6, 6])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QATLinear(_QATMixin, nn.Linear):
    """``nn.Linear`` with fake-quantized weight and input (see module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


_QAT_TYPES = (QATConv2d, QATLinear)


def prepare_qat(
    model: nn.Module,
    config: QAT,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[str]:
    """Replace Conv2d / Linear layers of ``model`` with QAT layers in place; return their names.

    Run one forward pass (e.g. a training step) before building the optimizer *only* if you rely
    on the activation range being initialised from data; the step parameters exist from the start.
    """
    if config.fold_bn:
        model.eval()
        fold_batchnorm(model)
    names = []
    candidates = [
        (n, m)
        for n, m in named_layers(model, (nn.Conv2d, nn.Linear))
        if not isinstance(m, _QAT_TYPES)
    ]
    for selected in config.select(candidates, filter_fn=filter_fn, amount_field="bits"):
        name, layer = selected.name, selected.module
        bits = selected.get("bits", config.bits)
        if not isinstance(bits, int) or not 2 <= bits <= 8:
            raise ConfigError(f"qat.per_layer[{name!r}]: bits must be an integer in [2, 8]")
        cls = QATConv2d if isinstance(layer, nn.Conv2d) else QATLinear
        new = cls.from_float(layer, bits, config.lsq, config.per_channel, config.averaging_constant)
        new.train(layer.training)
        set_submodule(model, name, new)
        names.append(name)
    if not names:
        raise ValueError("no Conv2d/Linear layer to prepare for QAT (check filter_fn)")
    return names


def _float_copy(q: nn.Module, weight: torch.Tensor) -> nn.Module:
    if isinstance(q, QATConv2d):
        new = nn.Conv2d(
            q.in_channels,
            q.out_channels,
            q.kernel_size,
            q.stride,
            q.padding,
            q.dilation,
            q.groups,
            q.bias is not None,
            q.padding_mode,
        )
    else:
        new = nn.Linear(q.in_features, q.out_features, q.bias is not None)
    new.weight = nn.Parameter(weight.detach().clone())
    if q.bias is not None:
        new.bias = nn.Parameter(q.bias.detach().clone())
    return new


def convert_qat(model: nn.Module) -> list[str]:
    """Freeze every QAT layer into a :class:`QuantizedLayer` (integer weight codes) in place.

    The converted model computes exactly what the QAT model computes in eval mode.
    """
    names = []
    for name, q in list(model.named_modules()):
        if not isinstance(q, _QAT_TYPES):
            continue
        act_scale, act_zp = q.act_qparams()
        w_scale, w_zp = q.weight_qparams()
        signed = bool(q.act_signed) and q.lsq
        layer = QuantizedLayer(
            _float_copy(q, q.weight),
            q.bits,
            None,
            q.per_channel,
            True,
            symmetric_activations=signed,
        )
        if q.lsq:
            # LSQ clamps x/s to the code range without rounding the weight to a min-max grid
            layer.freeze(act_scale, act_zp, w_scale, w_zp)
        else:
            layer.freeze(act_scale, act_zp)
        set_submodule(model, name, layer)
        names.append(name)
    return names


def strip_qat(model: nn.Module) -> list[str]:
    """Replace QAT layers by plain float layers holding their fake-quantized weights, in place.

    ``ns.finalize(model)`` runs it; then ``compress_(model, PTQ(), example_inputs=...)`` gives
    the int8 artefact of the QAT-trained model.
    """
    names = []
    for name, q in list(model.named_modules()):
        if isinstance(q, _QAT_TYPES):
            with torch.no_grad():
                set_submodule(model, name, _float_copy(q, q.quantized_weight()))
            names.append(name)
    return names


@register_handler(QAT)
def _apply(
    model: nn.Module,
    config: QAT,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[str]:
    """Handler for ``compress_``: swap in QAT layers (then train, then :func:`convert_qat`).

    When ``example_inputs`` is given, one no-grad forward initialises the activation ranges.
    """
    names = prepare_qat(model, config, filter_fn)
    if example_inputs is not None:
        inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
        with torch.no_grad(), eval_mode(model):
            model(*inputs)
    return names


def _qat_kwargs(m: nn.Module) -> dict[str, Any]:
    extra = {
        "bits": m.bits,
        "lsq": m.lsq,
        "per_channel": m.per_channel,
        "averaging_constant": m.averaging_constant,
    }
    return {**layer_kwargs(m), **extra}


register_module(QATConv2d, _qat_kwargs)
register_module(QATLinear, _qat_kwargs)


register_finalizer("qat", strip_qat)
