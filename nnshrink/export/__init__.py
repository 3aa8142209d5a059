"""Export to deployment formats (ONNX)."""

from .onnx import deployable_copy, export_onnx

__all__ = ["deployable_copy", "export_onnx"]
