"""nnshrink: make trained PyTorch networks smaller and faster, and prove it with measurements."""

from . import core, data, export, io, metrics, models, train
from ._version import __version__
from .core import Config, ConfigError, compress_, register_handler
from .io import load_checkpoint, save_checkpoint
from .metrics import Report
from .metrics import snapshot as profile

__all__ = [
    "Config",
    "ConfigError",
    "Report",
    "__version__",
    "compress_",
    "core",
    "data",
    "export",
    "io",
    "load_checkpoint",
    "metrics",
    "models",
    "profile",
    "register_handler",
    "save_checkpoint",
    "train",
]
