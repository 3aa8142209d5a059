"""Core API: config base, handler registry and the in-place entry point ``compress_``."""

from .config import Config, ConfigError, check_regexes, config_types
from .modules import (
    as_input_tuple,
    eval_mode,
    forward_with_hooks,
    model_device,
    named_layers,
    set_submodule,
)
from .registry import compress_, handler_for, register_handler

__all__ = [
    "Config",
    "ConfigError",
    "check_regexes",
    "as_input_tuple",
    "compress_",
    "config_types",
    "eval_mode",
    "forward_with_hooks",
    "handler_for",
    "model_device",
    "named_layers",
    "register_handler",
    "set_submodule",
]
