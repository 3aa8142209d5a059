"""The one thing ``compress_`` returns: :class:`CompressResult`.

Naming rule for result types across nnshrink: what a public function returns to its caller is a
``...Result`` (``CompressResult``, ``RunResult``, ``AdviseResult``); the technique-specific part
inside it is that technique's ``...Summary`` (``StructuredPruningSummary``, ``LowRankSummary``);
a ``Report`` renders measurements for people (tables, markdown, JSON).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from .config import Config


@dataclasses.dataclass
class Deployable:
    """What a handler returns when it also builds a runtime artefact (e.g. an ONNX Runtime
    int8 session) next to its in-place edit: the summary and the artefact."""

    summary: Any
    artifact: nn.Module


@dataclasses.dataclass
class CompressResult:
    """What :func:`nnshrink.compress_` did to the model (which it edited in place).

    Attributes:
        technique: the config kind, e.g. ``"structured-pruning"``.
        config: the config that was applied.
        before: ``params``, ``nonzero_params``, ``dense_bytes`` and (with tensor
            ``example_inputs``) ``macs`` per sample, measured by ``compress_`` before the edit.
        after: the same keys, measured after.
        summary: the technique's own report (a ``...Summary``), or ``None``.
        artifact: a deployable module the technique built besides the in-place edit (an int8
            ONNX Runtime session), or ``None``. ``artifact.save(path)`` writes it where supported.

    Attribute access falls back to ``summary`` (``result.macs_after`` reads
    ``result.summary.macs_after``), so code written against the old per-technique return values
    keeps working.

    Example:
        >>> import torch, nnshrink as ns
        >>> model = ns.models.create("lenet300")
        >>> result = ns.compress_(model, ns.MagnitudePruning(sparsity=0.9))
        >>> result.technique, result.after["nonzero_params"] < result.before["nonzero_params"]
        ('magnitude-pruning', True)
    """

    technique: str
    config: Config
    before: dict[str, Any]
    after: dict[str, Any]
    summary: Any = None
    artifact: nn.Module | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in {f.name for f in dataclasses.fields(CompressResult)}:
            raise AttributeError(name)
        summary = self.__dict__.get("summary")
        if summary is not None and hasattr(summary, name):
            return getattr(summary, name)
        raise AttributeError(f"CompressResult (and its {type(summary).__name__}) has no {name!r}")

    # Handlers that used to return a list of rows: iterate, index and measure the summary.
    def __iter__(self):
        return iter(self.summary if self.summary is not None else ())

    def __len__(self) -> int:
        return len(self.summary) if self.summary is not None else 0

    def __getitem__(self, index: Any) -> Any:
        return self.summary[index]

    def ratio(self, key: str) -> float | None:
        """``before[key] / after[key]`` (e.g. ``"params"``: the compression ratio), or ``None``."""
        b, a = self.before.get(key), self.after.get(key)
        if not b or not a:
            return None
        return b / a

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: technique, config, before/after and the summary's ``to_dict()``."""
        summary = self.summary
        if hasattr(summary, "to_dict"):
            summary = summary.to_dict()
        elif dataclasses.is_dataclass(summary) and not isinstance(summary, type):
            summary = dataclasses.asdict(summary)
        out = {
            "technique": self.technique,
            "config": self.config.to_dict(),
            "before": dict(self.before),
            "after": dict(self.after),
            "summary": summary,
        }
        if self.artifact is not None:
            out["artifact"] = type(self.artifact).__name__
        return out
