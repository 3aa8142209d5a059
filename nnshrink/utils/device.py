"""Devices by name: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N``."""

from __future__ import annotations

import re

import torch

DEVICE_HELP = "expected auto, cpu, cuda or cuda:N"
_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+|meta)$")


def parse_device(name: str | torch.device | None) -> str:
    """Validate a device name without touching CUDA; returns it normalised.

    Example:
        >>> parse_device("CUDA:1"), parse_device(None)
        ('cuda:1', 'auto')
    """
    if name is None:
        return "auto"
    text = str(name).strip().lower()
    if not _PATTERN.match(text):
        raise ValueError(f"device {name!r}: {DEVICE_HELP}")
    return text


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` to use: ``auto`` is ``cuda`` when available, else ``cpu``.

    Raises:
        ValueError: a CUDA device was asked for on a machine without one (names the fix).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    text = parse_device(name)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r}: no CUDA device here; use --device cpu (or auto)")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(text)
