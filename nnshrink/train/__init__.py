"""Training: a reusable fit/evaluate loop, callbacks, optimizer and schedule builders."""

from .callbacks import Callback, KeepZeros
from .evaluate import default_criterion, evaluate
from .fit import OPTIMIZERS, SCHEDULES, History, fit, make_optimizer, make_schedule

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "KeepZeros",
    "History",
    "default_criterion",
    "evaluate",
    "fit",
    "make_optimizer",
    "make_schedule",
]
