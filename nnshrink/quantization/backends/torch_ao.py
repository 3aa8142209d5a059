"""The ``"torch-fx"`` backend: torch.ao FX graph-mode int8 (``x86`` engine, fbgemm/oneDNN kernels).

This is the **only** module of nnshrink that imports ``torch.ao.quantization``, which PyTorch has
deprecated (to be removed in favour of torchao's pt2e flow). Its warnings are silenced here.

Activations are observed by *our* observers through :class:`NnshrinkActObserver`, a torch.ao
observer that delegates to :func:`~nnshrink.quantization.observers.make_observer`; weights use
a per-channel symmetric min-max observer restricted to [-127, 127], so the int8 weight codes are
those of the fake layers and of the ONNX Runtime graph. As in torch.ao's ``x86`` default qconfig,
activations use ``reduce_range`` (7-bit, 0..127) to avoid int16 accumulation overflow on CPUs
without VNNI. An observer can also replay a recorded range (:meth:`FxCalibrator.set_ranges`), which
is how :func:`nnshrink.quantization.convert` rebuilds the graph without calibrating again.
Custom modules that FX cannot trace (e.g. the zero-padding ResNet shortcut) are
kept as float modules.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import fx, nn

from ..observers import make_observer
from ..primitives import qparams_from_range
from .base import Backend, Calibrator, register_backend


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


with _quiet():
    from torch.ao.quantization import QConfig, QConfigMapping
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.observer import (
        MinMaxObserver,
        ObserverBase,
        PerChannelMinMaxObserver,
    )
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx


class NnshrinkActObserver(ObserverBase):
    """torch.ao activation observer backed by an nnshrink observer (uint8, 7-bit reduced range).

    Args:
        name: nnshrink observer name (``minmax``, ``moving_average``, ``percentile``, ``mse``,
            ``kl``).
        percentile: for ``percentile``.
    """

    def __init__(self, name: str = "minmax", percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(dtype=torch.quint8, is_dynamic=False)
        self.qscheme = torch.per_tensor_affine
        self.quant_min, self.quant_max = 0, 127
        self.impl = make_observer(name, bits=7, symmetric=False, percentile=percentile)
        self.fixed: tuple[float, float] | None = None  # a recorded range replaces the statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.numel() and self.fixed is None:
            self.impl.update(x)
        return x

    def range(self) -> tuple[float, float]:
        """The clipping range the int8 graph will use."""
        if self.fixed is not None:
            return self.fixed
        lo, hi = self.impl.range()
        return float(lo), float(hi)

    @torch.jit.export
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        lo, hi = self.range()
        scale, zp = qparams_from_range(lo, hi, bits=7, symmetric=False)
        return scale.reshape(1), zp.reshape(1).to(torch.int32)


def _untraceable_leaf_classes(model: nn.Module) -> list[type]:
    """Custom leaf modules whose own forward does not trace (they stay float)."""
    classes = []
    for module in model.modules():
        cls = type(module)
        if cls in classes or cls.__module__.startswith("torch.") or list(module.children()):
            continue
        try:
            fx.symbolic_trace(module)
        except Exception:  # noqa: BLE001 - any failure means "keep as a float leaf"
            classes.append(cls)
    return classes


class FxCalibrator(Calibrator):
    """Runs calibration batches through the observed FX graph module."""

    def __init__(self, prepared: nn.Module) -> None:
        self.prepared = prepared

    def observe(self, *inputs: torch.Tensor) -> None:  # noqa: D102
        with torch.no_grad():
            self.prepared(*inputs)

    def ranges(self) -> dict[str, tuple[float, float]]:
        """``{observer module name: (lo, hi)}`` of every calibrated activation observer."""
        return {
            name: m.range()
            for name, m in self.prepared.named_modules()
            if isinstance(m, NnshrinkActObserver) and (m.fixed is not None or m.impl.batches)
        }

    def set_ranges(self, ranges: dict[str, tuple[float, float]]) -> None:
        """Use recorded ranges instead of observing (``convert`` without re-calibrating).

        Raises:
            ValueError: when the graph's observers are not the recorded ones.
        """
        observers = {
            n: m for n, m in self.prepared.named_modules() if isinstance(m, NnshrinkActObserver)
        }
        if set(observers) != set(ranges):
            raise ValueError(
                "the recorded torch.ao observer ranges do not match this model's graph "
                f"({len(ranges)} recorded, {len(observers)} in the graph); calibrate again with "
                "compress_(model, PTQ(...))"
            )
        for name, (lo, hi) in ranges.items():
            observers[name].fixed = (float(lo), float(hi))

    def convert(self) -> nn.Module:  # noqa: D102
        with _quiet():
            return convert_fx(self.prepared)

    def rows(self) -> list[dict[str, Any]]:  # noqa: D102
        return [{"observer": n, "min": lo, "max": hi} for n, (lo, hi) in self.ranges().items()]


def _weight_observer(per_channel: bool) -> Any:
    # symmetric codes in [-127, 127] with scale max|w| / 127: the codes of our fake layers and of
    # ONNX Runtime's QDQ weights (torch.ao's default uses [-128, 127] and max|w| / 127.5)
    if per_channel:
        return PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric, quant_min=-127, quant_max=127
        )
    return MinMaxObserver.with_args(
        dtype=torch.qint8, qscheme=torch.per_tensor_symmetric, quant_min=-127, quant_max=127
    )


@register_backend("torch-fx")
class TorchFxBackend(Backend):
    """torch.ao ``prepare_fx`` / ``convert_fx`` with the ``x86`` quantized engine (on a copy).

    Layers the config's ``include`` / ``exclude`` / ``per_layer`` (or ``filter_fn``) leave out
    stay float.
    """

    def prepare(
        self,
        model: nn.Module,
        config: Any,
        example_inputs: tuple[torch.Tensor, ...] | None,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> FxCalibrator:  # noqa: D102
        from ..select import quantizable_layers

        if example_inputs is None:
            raise ValueError("the torch-fx backend needs example inputs to trace the model")
        if "x86" not in torch.backends.quantized.supported_engines:
            raise RuntimeError(
                f"this PyTorch build has no x86 quantized engine "
                f"(supported: {torch.backends.quantized.supported_engines})"
            )
        torch.backends.quantized.engine = "x86"
        _, skipped = quantizable_layers(model, config, filter_fn)
        model = copy.deepcopy(model).eval()
        act = NnshrinkActObserver.with_args(name=config.observer, percentile=config.percentile)
        qconfig = QConfig(activation=act, weight=_weight_observer(config.per_channel))
        mapping = QConfigMapping().set_global(qconfig)
        for name in skipped:
            mapping.set_module_name(name, None)
        custom = PrepareCustomConfig().set_non_traceable_module_classes(
            _untraceable_leaf_classes(model)
        )
        with _quiet():
            prepared = prepare_fx(model, mapping, example_inputs, prepare_custom_config=custom)
        return FxCalibrator(prepared)


def quantized_module_count(model: nn.Module) -> int:
    """Number of torch.ao quantized (int8) modules in a converted model."""
    return sum(
        type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
        for m in model.modules()
    )


def quantize_with_torch_ao_defaults(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """Baseline: torch.ao FX with its own ``x86`` default qconfig mapping and observers.

    Args:
        model: float model (a copy is quantized).
        batches: calibration batches (single-input models).

    Example:
        >>> fx = quantize_with_torch_ao_defaults(model, [x1, x2])  # doctest: +SKIP
    """
    with _quiet():
        from torch.ao.quantization import get_default_qconfig_mapping

        torch.backends.quantized.engine = "x86"
        model = copy.deepcopy(model).eval()
        custom = PrepareCustomConfig().set_non_traceable_module_classes(
            _untraceable_leaf_classes(model)
        )
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (batches[0],),
                              prepare_custom_config=custom)  # fmt: skip
        with torch.no_grad():
            for batch in batches:
                prepared(batch)
        return convert_fx(prepared)


def quantize_dynamic_with_torch_ao(model: nn.Module) -> nn.Module:
    """Baseline: torch.ao ``quantize_dynamic`` on every ``nn.Linear`` (its defaults: per-tensor
    weights, 7-bit activations), on a copy.

    Example:
        >>> q = quantize_dynamic_with_torch_ao(bert)  # doctest: +SKIP
    """
    with _quiet():
        from torch.ao.quantization import quantize_dynamic

        torch.backends.quantized.engine = "x86"
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
