"""The environment a measurement was taken in: machine, versions, threads, date."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any


def environment(seed: int | None = None) -> dict[str, Any]:
    """Machine and software versions to store beside every result (JSON-able).

    Example:
        >>> sorted(environment(seed=0))[:3]
        ['cpu_count', 'date', 'machine']
    """
    import numpy
    import torch

    from .._version import __version__

    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "nnshrink": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # optional at this level
        pass
    if seed is not None:
        info["seed"] = seed
    return info
