"""Post-training int8 quantization: the ``PTQ`` config, its summary and its ``compress_`` handler.

One contract, whatever the mode and backend::

    result = ns.compress_(model, PTQ(...), example_inputs=calibration)

* ``model`` is edited **in place**. For kernels that run inside PyTorch (``mode="dynamic"`` /
  ``"weight-only"`` with ``backend="torch"``) the edited model *is* the int8 model: its Linear
  layers are :class:`~nnshrink.quantization.int8_linear.Int8DynamicLinear` /
  :class:`~nnshrink.quantization.int8_linear.WeightOnlyLinear`. For whole-graph runtimes
  (``mode="static"``: ONNX Runtime, torch.ao FX) the model becomes its *calibrated form*: BN
  folded, every quantized layer a frozen ``QuantizedLayer`` holding int8 weights and the
  activation qparams the runtime graph uses (it still runs in PyTorch, simulating int8).
* ``result.artifact`` is the deployable runtime module built from the same calibration, when
  there is one: an ``OrtInt8Module`` (``save(path)`` writes the ``.onnx``), or for
  ``backend="auto"`` an ``AutoInt8Module`` that runs each batch on the faster of ONNX Runtime
  and torch.ao FX. :func:`nnshrink.quantization.convert` builds it again from the calibrated
  model without calibrating again.
* ``result.summary`` is a :class:`PTQSummary`.

Defaults are real int8: ``PTQ()`` is ``mode="static", backend="auto"``; simulation
(``backend="fake"``, any width 2..8) is asked for. The lower-level steps
(:func:`prepare` → ``Calibrator.calibrate`` → ``convert``) remain for custom calibration loops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import Config, ConfigError, LayerSelection, register_handler
from .backends import Calibrator, get_backend
from .int8_linear import INT4_KERNEL_GROUPS
from .observers import OBSERVERS

ModeName = Literal["static", "dynamic", "weight-only"]
ObserverName = Literal["minmax", "moving_average", "percentile", "mse", "kl"]
BackendName = Literal["auto", "onnxruntime", "torch-fx", "torch", "fake"]

BACKENDS_FOR_MODE = {
    "static": ("auto", "onnxruntime", "torch-fx", "fake"),
    "dynamic": ("auto", "torch", "onnxruntime", "fake"),
    "weight-only": ("auto", "torch", "onnxruntime", "fake"),
}
ORT_BLOCKS = (16, 32, 64, 128, 256)


@dataclasses.dataclass(frozen=True)
class PTQ(Config, LayerSelection):
    """Post-training int8 quantization of Conv / Linear layers (weights, and activations).

    Args:
        mode: ``static`` (weights and activations int8, activation ranges calibrated on
            ``example_inputs``; conv nets), ``dynamic`` (int8 weights, activations quantized at
            run time from each batch's range; Linear layers, transformers) or ``weight-only``
            (int8 / int4 weights, float activations; Linear layers).
        backend: ``auto`` (static: ONNX Runtime and torch.ao FX, each batch on the faster
            one; dynamic / weight-only: ``torch``), ``onnxruntime`` (static QDQ graph, or the
            in-place PyTorch int8 layers exported as ``DynamicQuantizeMatMul`` /
            ``MatMulNBits``), ``torch-fx`` (static, deprecated torch.ao FX, ``x86`` engine),
            ``torch`` (dynamic / weight-only int8 layers in the model itself) or ``fake``
            (simulation in PyTorch at any width 2..8).
        bits: 8; 4 too for ``weight-only``; 2..8 with ``backend="fake"``.
        observer: activation calibration for ``static``: ``minmax``, ``moving_average``,
            ``percentile``, ``mse`` or ``kl`` (TensorRT entropy).
        per_channel: per-output-channel weight scales.
        symmetric_weights: signed symmetric weights (zero-point 0).
        symmetric_activations: signed symmetric activations (default: unsigned affine).
        calibration_batches: at most this many batches are observed (``static``).
        percentile: clipping percentile for ``observer="percentile"``.
        fold_bn: fold BatchNorm into the preceding conv/linear first (always, for the int8
            runtimes of ``static``).
        group_size: ``weight-only``: inputs per weight scale; 0 is per output channel.
            ``None``: 0 for 8 bits, 32 for 4 bits. PyTorch's kernels take 0 (int8) or 32, 64,
            128, 256 (int4); ONNX Runtime's ``MatMulNBits`` takes 0 or 16..256 (powers of 2).
        reduce_range: ``dynamic`` with ``torch``: 7-bit activations. ``None``: only on CPUs
            without VNNI, where fbgemm's int16 sums could saturate.
        batch_sizes: ``static`` with ``auto``: the batch sizes at which both runtimes are timed.
        include, exclude, per_layer: layer selection (``exclude``: layers kept in float;
            ``per_layer``: ``{pattern: bits}``, ``{pattern: {"bits": 4}}`` or ``None``).

    Example:
        >>> cfg = PTQ(mode="dynamic", exclude=("pooler.dense",))
        >>> Config.from_dict(cfg.to_dict()) == cfg, cfg.backend
        (True, 'auto')
    """

    kind: ClassVar[str] = "ptq"
    amount_field: ClassVar[str] = "bits"
    mode: ModeName = "static"
    backend: BackendName = "auto"
    bits: int = 8
    observer: ObserverName = "minmax"
    per_channel: bool = True
    symmetric_weights: bool = True
    symmetric_activations: bool = False
    calibration_batches: int = 8
    percentile: float = 99.99
    fold_bn: bool = True
    group_size: int | None = None
    reduce_range: bool | None = None
    batch_sizes: tuple[int, ...] = (1, 64)

    def validate(self) -> None:  # noqa: D102
        if self.mode not in BACKENDS_FOR_MODE:
            raise ConfigError(
                f"ptq.mode must be one of {list(BACKENDS_FOR_MODE)}, got {self.mode!r}"
            )
        allowed = BACKENDS_FOR_MODE[self.mode]
        if self.backend not in allowed:
            raise ConfigError(
                f"ptq.backend={self.backend!r} does not run mode={self.mode!r}; choose one of "
                f"{list(allowed)}"
            )
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ConfigError(f"ptq.bits must be an integer in [2, 8], got {self.bits!r}")
        real = self.backend != "fake"
        if real and self.mode != "weight-only" and self.bits != 8:
            raise ConfigError(
                f"ptq.backend={self.backend!r} runs int8 kernels: use bits=8, or backend='fake' "
                f"to simulate {self.bits} bits"
            )
        if real and self.mode == "weight-only" and self.bits not in (4, 8):
            raise ConfigError(
                f"weight-only kernels exist for 8 and 4 bits, got bits={self.bits}; use "
                "backend='fake' to simulate other widths"
            )
        if self.observer not in OBSERVERS:
            raise ConfigError(
                f"ptq.observer must be one of {list(OBSERVERS)}, got {self.observer!r}"
            )
        if self.calibration_batches < 1:
            raise ConfigError(
                f"ptq.calibration_batches must be >= 1, got {self.calibration_batches}"
            )
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"ptq.percentile must be in (50, 100], got {self.percentile}")
        if self.backend == "torch-fx" and not self.symmetric_weights:
            raise ConfigError("ptq.backend='torch-fx' uses symmetric per-channel weights")
        if real and self.mode != "static" and not self.symmetric_weights:
            raise ConfigError(
                f"mode={self.mode!r} int8 kernels use symmetric weights; set "
                "symmetric_weights=True or backend='fake'"
            )
        if not self.batch_sizes or any(
            not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in self.batch_sizes
        ):
            raise ConfigError(
                f"ptq.batch_sizes must be positive integers, got {list(self.batch_sizes)}"
            )
        if self.group_size is not None:
            self._check_group_size(self.bits)

    def _check_group_size(self, bits: int) -> None:
        if self.group_size not in (None, 0) and self.mode != "weight-only":
            raise ConfigError("ptq.group_size applies to mode='weight-only' only")
        group = self.resolved_group_size(bits)
        if group < 0:
            raise ConfigError(f"ptq.group_size must be >= 0, got {group}")
        if self.mode != "weight-only" or self.backend == "fake":
            return
        if self.backend == "onnxruntime" and group not in (0, *ORT_BLOCKS):
            raise ConfigError(
                f"ONNX Runtime's MatMulNBits takes group_size 0 (per channel) or one of "
                f"{list(ORT_BLOCKS)}, got {group}"
            )
        if self.backend in ("auto", "torch"):
            if bits == 8 and group != 0:
                raise ConfigError(
                    "PyTorch's int8 weight-only kernel is per channel: use group_size=0, or "
                    "backend='onnxruntime' for int8 groups"
                )
            if bits == 4 and group not in INT4_KERNEL_GROUPS:
                raise ConfigError(
                    f"PyTorch's int4 kernel takes group_size in {list(INT4_KERNEL_GROUPS)}, "
                    f"got {group}"
                )

    def resolved_group_size(self, bits: int | None = None) -> int:
        """The weight-only group size for ``bits`` (``group_size``, or its default)."""
        if self.mode != "weight-only":
            return 0
        if self.group_size is not None:
            return self.group_size
        return 0 if (bits or self.bits) == 8 else 32


@dataclasses.dataclass
class PTQSummary:
    """What ``compress_(model, PTQ(...))`` did (``result.summary``).

    Attributes:
        mode: ``static`` / ``dynamic`` / ``weight-only``.
        backend: the backend asked for.
        runtime: what runs: ``fake``, ``torch``, ``onnxruntime``, ``torch-fx`` or
            ``auto (b1: onnxruntime, b64: torch-fx)``.
        layers: one row per quantized layer (name, type, bits, kernel, weight bytes, ...).
        skipped: ``{layer: reason}`` for the candidate layers left in float.
        calibration_batches: how many batches were observed (0 when nothing is calibrated).
        timings: ``auto``: ``{batch: {runtime: median ms}}`` measured on the calibration data.
        choice: ``auto``: ``{batch: runtime}`` that the artefact uses.
        unavailable: runtimes ``auto`` could not build here, with the reason.
        notes: other things done to the model (e.g. fused transformer fast paths disabled).
        ranges: ``static`` ONNX Runtime: calibrated ``{tensor, min, max}`` rows.
    """

    mode: str
    backend: str
    runtime: str
    layers: list[dict[str, Any]]
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    calibration_batches: int = 0
    timings: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)
    choice: dict[int, str] = dataclasses.field(default_factory=dict)
    unavailable: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    ranges: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Per-layer rows (``layers``; the name ``PTQResult`` used)."""
        return self.layers

    @property
    def model(self) -> nn.Module:
        """Removed: ``compress_`` edits the model in place; the runtime module is
        ``result.artifact``."""
        raise AttributeError(
            "PTQSummary has no model: compress_ edits your model in place; the deployable "
            "runtime module (ONNX Runtime / auto) is result.artifact"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return dataclasses.asdict(self)


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
    """Lower level, static mode: instrument the model for a calibration loop of your own.

    ``compress_(model, PTQ(...), example_inputs=batches)`` is the usual entry point; use this
    when the batches come from your own loop (``cal.observe(x)`` per batch). ``backend="auto"``
    is not a single calibrator: give ``onnxruntime`` or ``torch-fx`` here.

    Args:
        model: the float model (edited in place by the ``fake`` backend only).
        config: a :class:`PTQ` config.
        example_inputs: one input batch (needed by the ``onnxruntime`` and ``torch-fx`` backends
            to export / trace the model).
        filter_fn: ``(module, name) -> bool`` selecting layers.

    Returns:
        a :class:`~nnshrink.quantization.backends.Calibrator`; call ``calibrate`` then ``convert``.
    """
    if config.backend == "auto":
        raise ConfigError(
            "prepare() drives one runtime: use backend='onnxruntime' or 'torch-fx' (or "
            "compress_ for backend='auto')"
        )
    inputs = None if example_inputs is None else calibration_batches(example_inputs)[0]
    return get_backend(config.backend).prepare(model, config, inputs, filter_fn)


@dataclasses.dataclass
class _LegacyPTQ:
    model: nn.Module
    summary: PTQSummary

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["summary"], name)


def quantize_ptq(
    model: nn.Module,
    config: PTQ,
    batches: Any,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> Any:
    """Deprecated: ``compress_(model, config, example_inputs=batches)``, then
    ``result.artifact or model``.

    Kept for old callers: edits ``model`` in place like ``compress_`` and returns an object
    with ``.model`` (the artefact, or the model itself) and the summary's attributes.
    """
    from .._deprecated import warn
    from ..core import compress_

    warn("nnshrink.quantization.quantize_ptq", "nnshrink.compress_ and result.artifact")
    result = compress_(model, config, example_inputs=batches, filter_fn=filter_fn, measure=False)
    return _LegacyPTQ(result.artifact if result.artifact is not None else model, result.summary)


@register_handler(PTQ)
def _apply(
    model: nn.Module,
    config: PTQ,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> Any:
    """Handler for ``compress_``: ``example_inputs`` is the calibration data (see
    :func:`calibration_batches`); static mode needs it, the others only to export to ONNX."""
    if config.backend == "fake":
        from .fake_flow import quantize_fake_

        return quantize_fake_(model, config, example_inputs, filter_fn)
    if config.mode == "static":
        from .static import quantize_static_

        return quantize_static_(model, config, example_inputs, filter_fn)
    from .dynamic import quantize_linear_

    return quantize_linear_(model, config, example_inputs, filter_fn)


def iter_inputs(loader: Iterable[Any], limit: int) -> list[torch.Tensor]:
    """First ``limit`` input batches of a loader yielding ``(x, y)`` (or plain tensors)."""
    out = []
    for item in loader:
        if len(out) >= limit:
            break
        out.append(item if isinstance(item, torch.Tensor) else item[0])
    return out


from .._deprecated import module_getattr as _module_getattr  # noqa: E402

__getattr__ = _module_getattr(__name__)
