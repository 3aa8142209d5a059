"""Multi-step pipelines that need training data (Deep Compression)."""

from .deep_compression import (
    DeepCompression,
    DeepCompressionResult,
    DeepCompressionSummary,
    deep_compress,
)

__all__ = ["DeepCompression", "DeepCompressionResult", "DeepCompressionSummary", "deep_compress"]
