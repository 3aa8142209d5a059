"""nnshrink: make trained PyTorch networks smaller and faster, and prove it with measurements."""

from . import core, metrics, models
from ._version import __version__
from .core import Config, ConfigError, compress_, register_handler

__all__ = [
    "Config",
    "ConfigError",
    "__version__",
    "compress_",
    "core",
    "metrics",
    "models",
    "register_handler",
]
