"""nnshrink: make trained PyTorch networks smaller and faster, and prove it with measurements."""

from . import core, data, export, io, metrics, models, storage, train
from ._version import __version__
from .core import Config, ConfigError, compress_, register_handler
from .io import load_checkpoint, save_checkpoint
from .metrics import Report
from .metrics import snapshot as profile
from .storage import FormatError, load, save, storage_report

__all__ = [
    "Config",
    "ConfigError",
    "FormatError",
    "Report",
    "__version__",
    "compress_",
    "core",
    "data",
    "export",
    "io",
    "load",
    "load_checkpoint",
    "metrics",
    "models",
    "profile",
    "register_handler",
    "save",
    "save_checkpoint",
    "storage",
    "storage_report",
    "train",
]
