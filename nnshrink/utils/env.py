"""The environment a measurement was taken in: machine, versions, threads, date."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import Any

# instruction sets that change what int8 and fp32 kernels do: without an int8 dot product
# (VNNI / AMX), fbgemm and ONNX Runtime sum u8 x s8 products in int16, which can saturate, so
# int8 accuracy and speed-ups differ between machines of the same "x86_64"
_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def cpu_info(cpuinfo: str | None = None) -> dict[str, Any]:
    r"""``{"cpu_model", "cpu_isa"}``: the CPU's name and which of the int8-relevant instruction
    sets it has (from ``/proc/cpuinfo``; ``{}`` where that file is missing).

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read from the file when ``None``).

    Example:
        >>> cpu_info("model name\t: Some CPU\nflags\t\t: fpu avx2 avx512f\n")
        {'cpu_model': 'Some CPU', 'cpu_isa': ['avx2', 'avx512f']}
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return {}
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "cpu_isa": [f for f in _ISA_FLAGS if f in flags]}


def environment(seed: int | None = None) -> dict[str, Any]:
    """Machine and software versions to store beside every result (JSON-able).

    Besides versions and threads it names the CPU and its int8-relevant instruction sets
    (:func:`cpu_info`): int8 results on an AVX2-only CPU and on one with VNNI differ.

    Example:
        >>> info = environment(seed=0)
        >>> info["seed"], "torch_cpu_capability" in info
        (0, True)
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
        **cpu_info(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # optional at this level
        pass
    if seed is not None:
        info["seed"] = seed
    return info
