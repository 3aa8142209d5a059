"""Core API: config base, handler registry and the in-place entry point ``compress_``."""

from .config import Config, ConfigError, check_regexes, config_types
from .finalize import finalize, register_finalizer
from .layers import LayerSelection, SelectedLayer
from .modules import (
    as_input_tuple,
    eval_mode,
    forward_with_hooks,
    model_device,
    named_layers,
    set_submodule,
    to_device,
)
from .registry import compress_, handler_for, measure_model, register_handler
from .result import CompressResult, Deployable
from .sensitivity import LayerScan, ReplayBatches, conv_linear_layers, scan_layers, task_score
from .transaction import transaction

__all__ = [
    "CompressResult",
    "Deployable",
    "LayerScan",
    "LayerSelection",
    "ReplayBatches",
    "SelectedLayer",
    "measure_model",
    "transaction",
    "Config",
    "ConfigError",
    "check_regexes",
    "as_input_tuple",
    "compress_",
    "config_types",
    "conv_linear_layers",
    "eval_mode",
    "finalize",
    "forward_with_hooks",
    "handler_for",
    "model_device",
    "named_layers",
    "register_finalizer",
    "register_handler",
    "scan_layers",
    "set_submodule",
    "task_score",
    "to_device",
]
