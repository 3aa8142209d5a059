"""Quantized execution backends ("fake", "onnxruntime", "torch-fx") behind one interface."""

from .base import Backend, Calibrator, backend_names, get_backend, register_backend

__all__ = ["Backend", "Calibrator", "backend_names", "get_backend", "register_backend"]
