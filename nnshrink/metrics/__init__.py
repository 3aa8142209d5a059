"""Evaluation criteria from the surveys: parameters, MACs, size, latency, accuracy, reports."""

from .macs import LayerMacs, count_macs, profile_macs, register_mac_counter
from .params import count_nonzero_params, count_params

__all__ = [
    "LayerMacs",
    "count_macs",
    "count_nonzero_params",
    "count_params",
    "profile_macs",
    "register_mac_counter",
]
