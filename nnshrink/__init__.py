"""nnshrink: make trained PyTorch networks smaller and faster, and prove it with measurements.

Example:
    >>> import torch, nnshrink as ns
    >>> model = ns.models.create("lenet300")
    >>> summary = ns.compress_(model, ns.MagnitudePruning(sparsity=0.9))
    >>> ns.profile(model, torch.zeros(1, 1, 28, 28), latency=False)["nonzero_params"] < 30_000
    True
"""

from . import (
    _deprecated,  # noqa: F401  (old module paths keep importing, with a warning)
    advise,
    binary,
    compact,
    core,
    data,
    distill,
    export,
    io,
    lowrank,
    metrics,
    models,
    pipelines,
    pruning,
    quantization,
    recipes,
    sharing,
    storage,
    train,
)
from ._version import __version__
from .binary import BinaryWeights, Ternary
from .compact import CompactReplace
from .core import CompressResult, Config, ConfigError, compress_, finalize, register_handler
from .distill import Distiller
from .io import load_checkpoint, save_checkpoint
from .lowrank import LowRank
from .metrics import Report
from .metrics import snapshot as profile
from .pipelines import DeepCompression, deep_compress
from .pruning import MagnitudePruning, SparseGPT, StructuredPruning, Wanda
from .pruning.variational import VariationalDropout
from .quantization import PTQ, QAT, MixedPrecision
from .sharing import Circulant, Hashing, WeightSharing
from .storage import FormatError, load, save, storage_report

__all__ = [
    "PTQ",
    "QAT",
    "BinaryWeights",
    "Circulant",
    "CompactReplace",
    "CompressResult",
    "Config",
    "ConfigError",
    "DeepCompression",
    "Distiller",
    "FormatError",
    "Hashing",
    "LowRank",
    "MagnitudePruning",
    "MixedPrecision",
    "Report",
    "SparseGPT",
    "StructuredPruning",
    "Ternary",
    "VariationalDropout",
    "Wanda",
    "WeightSharing",
    "__version__",
    "advise",
    "binary",
    "compact",
    "compress_",
    "core",
    "data",
    "deep_compress",
    "distill",
    "export",
    "finalize",
    "io",
    "load",
    "load_checkpoint",
    "lowrank",
    "metrics",
    "models",
    "pipelines",
    "profile",
    "pruning",
    "quantization",
    "recipes",
    "register_handler",
    "save",
    "save_checkpoint",
    "sharing",
    "storage",
    "storage_report",
    "train",
]
