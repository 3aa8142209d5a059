"""Backend interface for post-training quantization: prepare → calibrate → convert.

A backend turns a float model plus calibration batches into something that runs quantized:

* ``"fake"``: in-place module swap; int8 weight storage, fake-quantized activations in PyTorch
  (any bit width 2..8, portable, for accuracy studies);
* ``"onnxruntime"``: real int8 kernels — QDQ ONNX graph with our observers' ranges, run by an
  ONNX Runtime session wrapped as an ``nn.Module`` (:class:`OrtInt8Module`);
* ``"torch-fx"``: real int8 kernels from the deprecated torch.ao FX flow (``x86`` engine).

Backends are looked up by name; the built-in ones are imported lazily so that importing nnshrink
never loads onnxruntime or torch.ao.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


class Calibrator(ABC):
    """State between ``prepare`` and ``convert``: feed batches, then convert.

    Example:
        >>> cal = get_backend("fake").prepare(model, PTQ(), None)  # doctest: +SKIP
        >>> cal.calibrate([x1, x2]); qmodel = cal.convert()  # doctest: +SKIP
    """

    @abstractmethod
    def observe(self, *inputs: torch.Tensor) -> None:
        """Run one calibration batch (positional model inputs) through the observers."""

    @abstractmethod
    def convert(self) -> nn.Module:
        """Finish calibration and return the quantized model."""

    def calibrate(self, batches: Iterable[Any], limit: int | None = None) -> int:
        """Observe each batch (a tensor or a tuple of inputs); return the number of batches seen."""
        seen = 0
        for batch in batches:
            if limit is not None and seen >= limit:
                break
            self.observe(*((batch,) if isinstance(batch, torch.Tensor) else tuple(batch)))
            seen += 1
        return seen

    def rows(self) -> list[dict[str, Any]]:
        """Per-layer (or per-tensor) summary rows after ``convert``."""
        return []


class Backend(ABC):
    """A quantized execution target."""

    name: str = ""

    @abstractmethod
    def prepare(
        self,
        model: nn.Module,
        config: Any,
        example_inputs: tuple[torch.Tensor, ...] | None,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
    ) -> Calibrator:
        """Instrument ``model`` (or a copy of it) for calibration under ``config`` (a ``PTQ``)."""


_BACKENDS: dict[str, type[Backend] | str] = {
    "fake": "nnshrink.quantization.backends.fake:FakeBackend",
    "onnxruntime": "nnshrink.quantization.backends.ort:OrtBackend",
    "torch-fx": "nnshrink.quantization.backends.torch_ao:TorchFxBackend",
}


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Class decorator adding a :class:`Backend` under ``name``."""

    def decorator(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return decorator


def backend_names() -> list[str]:
    """Names of the known backends."""
    return sorted(_BACKENDS)


def get_backend(name: str) -> Backend:
    """Instantiate the backend called ``name`` (importing it on first use)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown quantization backend {name!r}; choose one of {backend_names()}")
    entry = _BACKENDS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        _BACKENDS[name] = entry
    return entry()
