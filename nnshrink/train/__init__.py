"""Training: a reusable fit/evaluate loop, callbacks, optimizer and schedule builders."""

from .callbacks import Callback, KeepZeros
from .distributed import DistInfo, barrier, init_distributed, is_main_process, unwrap, wrap_ddp
from .evaluate import default_criterion, evaluate
from .fit import OPTIMIZERS, SCHEDULES, History, fit, make_optimizer, make_schedule

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "DistInfo",
    "KeepZeros",
    "History",
    "barrier",
    "default_criterion",
    "evaluate",
    "fit",
    "init_distributed",
    "is_main_process",
    "make_optimizer",
    "make_schedule",
    "unwrap",
    "wrap_ddp",
]
