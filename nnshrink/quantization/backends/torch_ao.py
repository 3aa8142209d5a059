"""The ``"torch-fx"`` backend: torch.ao FX graph-mode int8 (``x86`` engine, fbgemm/oneDNN kernels).

This is the **only** module of nnshrink that imports ``torch.ao.quantization``, which PyTorch has
deprecated (to be removed in favour of torchao's pt2e flow). Its warnings are silenced here.

Activations are observed by *our* observers through :class:`NnshrinkActObserver`, a torch.ao
observer that delegates to :func:`~nnshrink.quantization.observers.make_observer`; weights use
torch.ao's per-channel symmetric min-max observer. As in torch.ao's ``x86`` default qconfig,
activations use ``reduce_range`` (7-bit, 0..127) to avoid int16 accumulation overflow on CPUs
without VNNI. Custom modules that FX cannot trace (e.g. the zero-padding ResNet shortcut) are
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
    from torch.ao.quantization import QConfig, QConfigMapping, default_per_channel_weight_observer
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.observer import ObserverBase
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.numel():
            self.impl.update(x)
        return x

    @torch.jit.export
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        lo, hi = self.impl.range()
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

    def convert(self) -> nn.Module:  # noqa: D102
        with _quiet():
            return convert_fx(self.prepared)

    def rows(self) -> list[dict[str, Any]]:  # noqa: D102
        return []


@register_backend("torch-fx")
class TorchFxBackend(Backend):
    """torch.ao ``prepare_fx`` / ``convert_fx`` with the ``x86`` quantized engine (on a copy)."""

    def prepare(
        self,
        model: nn.Module,
        config: Any,
        example_inputs: tuple[torch.Tensor, ...] | None,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> FxCalibrator:  # noqa: D102
        if example_inputs is None:
            raise ValueError("the torch-fx backend needs example inputs to trace the model")
        if "x86" not in torch.backends.quantized.supported_engines:
            raise RuntimeError(
                f"this PyTorch build has no x86 quantized engine "
                f"(supported: {torch.backends.quantized.supported_engines})"
            )
        torch.backends.quantized.engine = "x86"
        model = copy.deepcopy(model).eval()
        act = NnshrinkActObserver.with_args(name=config.observer, percentile=config.percentile)
        weight = default_per_channel_weight_observer
        if not config.per_channel:
            from torch.ao.quantization.observer import default_weight_observer

            weight = default_weight_observer
        mapping = QConfigMapping().set_global(QConfig(activation=act, weight=weight))
        if filter_fn is not None:
            for name, module in model.named_modules():
                if isinstance(module, nn.Conv2d | nn.Linear) and not filter_fn(module, name):
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
