"""Multi-step pipelines that need training data (Deep Compression)."""

from .deep_compression import DeepCompression, DeepCompressionResult, deep_compress

__all__ = ["DeepCompression", "DeepCompressionResult", "deep_compress"]
