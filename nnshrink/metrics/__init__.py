"""Evaluation criteria from the surveys: parameters, MACs, size, latency, accuracy, reports."""

from ..train.evaluate import evaluate
from .latency import (
    RUNTIMES,
    LatencyStats,
    forward_call,
    measure_latency,
    ort_session,
    time_callable,
)
from .macs import (
    LayerMacs,
    count_macs,
    count_macs_per_sample,
    first_sample,
    profile_macs,
    register_mac_counter,
)
from .params import count_nonzero_params, count_params
from .report import METRICS, Report
from .size import dense_bytes, file_bytes, state_bytes
from .snapshot import snapshot

__all__ = [
    "METRICS",
    "RUNTIMES",
    "LatencyStats",
    "LayerMacs",
    "Report",
    "count_macs",
    "count_macs_per_sample",
    "first_sample",
    "count_nonzero_params",
    "count_params",
    "dense_bytes",
    "evaluate",
    "file_bytes",
    "forward_call",
    "measure_latency",
    "ort_session",
    "profile_macs",
    "register_mac_counter",
    "snapshot",
    "state_bytes",
    "time_callable",
]
