"""Post-training quantization: calibrate activation ranges on a few batches, then convert.

Three steps, usable on their own::

    cal = prepare(model, PTQ(observer="kl", backend="onnxruntime"), example_inputs=x)
    cal.calibrate(batches)            # or cal.observe(x) inside your own loop
    qmodel = cal.convert()            # nn.Module: OrtInt8Module, torch.ao GraphModule, or model

or in one call, :func:`quantize_ptq`, or through ``nnshrink.compress_``. The handler returns a
:class:`PTQResult` whose ``.model`` is the quantized model. **In-place semantics**: with
``backend="fake"`` the user's model itself is edited (``result.model is model``); the int8 backends
produce a different kind of object (an ONNX Runtime session or a torch.ao graph module) that
cannot be written into the caller's ``nn.Module`` instance, so the caller's model is left
untouched and the int8 model is ``result.model``. We chose this over a wrapper that hijacks the
original object because a silent ``forward`` swap would break ``state_dict``, ``.to()`` and
``copy.deepcopy`` on the user's model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import Config, ConfigError, register_handler
from .backends import Calibrator, get_backend
from .observers import OBSERVERS

ObserverName = Literal["minmax", "moving_average", "percentile", "mse", "kl"]
BackendName = Literal["fake", "onnxruntime", "torch-fx"]


@dataclasses.dataclass(frozen=True)
class PTQ(Config):
    """Post-training uniform quantization of Conv/Linear weights and their input activations.

    Args:
        bits: bit width (2..8 with ``backend="fake"``; 8 for the int8 backends).
        observer: activation calibration: ``minmax``, ``moving_average``, ``percentile``,
            ``mse`` or ``kl`` (TensorRT entropy).
        per_channel: per-output-channel weight scales.
        symmetric_weights: signed symmetric weights (zero-point 0).
        symmetric_activations: signed symmetric activations (default: unsigned affine).
        backend: ``fake`` (PyTorch simulation, in place), ``onnxruntime`` (int8 QDQ graph run by
            ONNX Runtime) or ``torch-fx`` (deprecated torch.ao FX, ``x86`` engine).
        calibration_batches: at most this many batches are observed.
        percentile: clipping percentile for ``observer="percentile"``.
        fold_bn: fold BatchNorm into the preceding conv/linear first (the int8 backends always
            fold).

    Example:
        >>> cfg = PTQ(bits=8, observer="percentile", backend="fake")
        >>> Config.from_dict(cfg.to_dict()) == cfg
        True
    """

    kind: ClassVar[str] = "ptq"
    bits: int = 8
    observer: ObserverName = "minmax"
    per_channel: bool = True
    symmetric_weights: bool = True
    symmetric_activations: bool = False
    backend: BackendName = "fake"
    calibration_batches: int = 8
    percentile: float = 99.99
    fold_bn: bool = True

    def validate(self) -> None:  # noqa: D102
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ConfigError(f"ptq.bits must be an integer in [2, 8], got {self.bits!r}")
        if self.backend != "fake" and self.bits != 8:
            raise ConfigError(
                f"ptq.backend={self.backend!r} runs int8 kernels: use bits=8, or backend='fake' "
                f"to simulate {self.bits} bits"
            )
        if self.observer not in OBSERVERS:
            raise ConfigError(
                f"ptq.observer must be one of {list(OBSERVERS)}, got {self.observer!r}"
            )
        if self.backend not in ("fake", "onnxruntime", "torch-fx"):
            raise ConfigError(
                f"ptq.backend must be 'fake', 'onnxruntime' or 'torch-fx', got {self.backend!r}"
            )
        if self.calibration_batches < 1:
            raise ConfigError(
                f"ptq.calibration_batches must be >= 1, got {self.calibration_batches}"
            )
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"ptq.percentile must be in (50, 100], got {self.percentile}")
        if self.backend == "torch-fx" and not self.symmetric_weights:
            raise ConfigError("ptq.backend='torch-fx' uses symmetric per-channel weights")


@dataclasses.dataclass
class PTQResult:
    """What ``compress_(model, PTQ(...))`` returns.

    Attributes:
        model: the quantized model (the caller's object for ``backend="fake"``, a new module
            otherwise: an ``OrtInt8Module`` or a torch.ao ``GraphModule``).
        backend: the backend name.
        rows: per-layer (fake) or per-tensor (onnxruntime) calibration rows.
        calibration_batches: how many batches were observed.
    """

    model: nn.Module
    backend: str
    rows: list[dict[str, Any]]
    calibration_batches: int


def calibration_batches(data: Any) -> list[tuple[torch.Tensor, ...]]:
    """Normalise calibration data to a list of positional-input tuples.

    Accepted: a tensor (one batch); a list/tuple of tensors (one batch each) or of tuples
    (multi-input models); any other iterable, e.g. a data loader yielding ``(x, y)`` pairs, whose
    first element is used.

    Example:
        >>> len(calibration_batches([torch.zeros(2, 3), torch.zeros(2, 3)]))
        2
    """
    if data is None:
        raise ValueError(
            "PTQ needs calibration data: pass example_inputs= a tensor batch, a list of batches, "
            "or a loader yielding (x, y)"
        )
    if isinstance(data, torch.Tensor):
        return [(data,)]
    if isinstance(data, list | tuple):
        return [(b,) if isinstance(b, torch.Tensor) else tuple(b) for b in data]
    out = []
    for item in data:
        out.append((item,) if isinstance(item, torch.Tensor) else (item[0],))
    return out


def prepare(
    model: nn.Module,
    config: PTQ,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> Calibrator:
    """Step 1: instrument the model for calibration with ``config.backend``.

    Args:
        model: the float model (edited in place by the ``fake`` backend only).
        config: a :class:`PTQ` config.
        example_inputs: one input batch (needed by the ``onnxruntime`` and ``torch-fx`` backends
            to export / trace the model).
        filter_fn: ``(module, name) -> bool`` selecting layers (``fake`` backend only).

    Returns:
        a :class:`~nnshrink.quantization.backends.Calibrator`; call ``calibrate`` then ``convert``.
    """
    inputs = None if example_inputs is None else calibration_batches(example_inputs)[0]
    return get_backend(config.backend).prepare(model, config, inputs, filter_fn)


def quantize_ptq(
    model: nn.Module,
    config: PTQ,
    batches: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> PTQResult:
    """prepare → calibrate (``config.calibration_batches`` batches) → convert, in one call.

    Example:
        >>> res = quantize_ptq(model, PTQ(backend="onnxruntime"), [x1, x2])  # doctest: +SKIP
        >>> res.model(x1).shape  # doctest: +SKIP
    """
    data = calibration_batches(batches)
    calibrator = prepare(model, config, data[0], filter_fn)
    seen = calibrator.calibrate(data, limit=config.calibration_batches)
    qmodel = calibrator.convert()
    return PTQResult(qmodel, config.backend, calibrator.rows(), seen)


@register_handler(PTQ)
def _apply(
    model: nn.Module,
    config: PTQ,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> PTQResult:
    """Handler for ``compress_``: ``example_inputs`` is the calibration data (see
    :func:`calibration_batches`). Returns a :class:`PTQResult`; use ``result.model``."""
    return quantize_ptq(model, config, example_inputs, filter_fn)


def iter_inputs(loader: Iterable[Any], limit: int) -> list[torch.Tensor]:
    """First ``limit`` input batches of a loader yielding ``(x, y)`` (or plain tensors)."""
    out = []
    for item in loader:
        if len(out) >= limit:
            break
        out.append(item if isinstance(item, torch.Tensor) else item[0])
    return out
