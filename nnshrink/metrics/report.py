"""Before/after reports with ratios, rendered as a rich table, markdown or JSON."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

# key -> (label, how to compare): "ratio" = before / after (bigger is better: compression,
# speed-up), "delta" = after - before (accuracy change, in the metric's own unit).
METRICS: dict[str, tuple[str, str]] = {
    "params": ("parameters", "ratio"),
    "nonzero_params": ("non-zero parameters", "ratio"),
    "macs": ("MACs / sample", "ratio"),
    "size_bytes": ("size (bytes)", "ratio"),
    "file_bytes": ("file (bytes)", "ratio"),
    "latency_ms": ("latency eager (ms)", "ratio"),
    "latency_onnx_ms": ("latency ONNX Runtime (ms)", "ratio"),
    "top1": ("top-1", "delta"),
    "top5": ("top-5", "delta"),
    "loss": ("loss", "delta"),
}


def _fmt(value: Any, key: str) -> str:
    if value is None:
        return "-"
    if key in ("top1", "top5"):
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


@dataclasses.dataclass
class Report:
    """Two measurements of a model side by side, with ratios.

    Args:
        before: a :func:`~nnshrink.metrics.snapshot` of the original model.
        after: a snapshot of the compressed model.
        title: heading for rendered output.
        details: extra JSON-able data (per-layer rows, settings) kept in :meth:`to_dict`.
        extra_keys: more metric keys to compare by difference (a user's metric, e.g. ``mse``).

    Example:
        >>> r = Report({"params": 100, "top1": 0.99}, {"params": 10, "top1": 0.985})
        >>> r.row("params")
        {'before': 100, 'after': 10, 'ratio': 10.0}
    """

    before: dict[str, Any]
    after: dict[str, Any]
    title: str = "nnshrink report"
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra_keys: tuple[str, ...] = ()

    def keys(self) -> list[str]:
        """Metric keys present in both measurements, in a fixed order (then ``extra_keys``)."""
        known = [k for k in METRICS if k in self.before and k in self.after]
        return known + [k for k in self.extra_keys if k in self.before and k in self.after]

    def row(self, key: str) -> dict[str, Any]:
        """``{"before", "after", "ratio"}`` or ``{"before", "after", "change"}`` for a key."""
        b, a = self.before[key], self.after[key]
        entry: dict[str, Any] = {"before": b, "after": a}
        kind = METRICS[key][1] if key in METRICS else "delta"  # a user's metric: its own units
        if kind == "ratio":
            entry["ratio"] = (b / a) if (b is not None and a) else None
        else:
            entry["change"] = (a - b) if (a is not None and b is not None) else None
        return entry

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: one entry per metric plus ``details``."""
        out: dict[str, Any] = {k: self.row(k) for k in self.keys()}
        if self.details:
            out["details"] = self.details
        return out

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def _table_rows(self) -> list[tuple[str, str, str, str]]:
        rows = []
        for key in self.keys():
            entry = self.row(key)
            if "ratio" in entry:
                change = "-" if entry["ratio"] is None else f"{entry['ratio']:.2f}x"
            elif entry["change"] is None:
                change = "-"
            elif key in ("top1", "top5"):
                change = f"{100 * entry['change']:+.2f} pt"
            else:
                change = f"{entry['change']:+.4g}"
            label = METRICS[key][0] if key in METRICS else key
            rows.append((label, _fmt(entry["before"], key), _fmt(entry["after"], key), change))
        return rows

    def to_markdown(self) -> str:
        """A markdown table: metric | before | after | ratio or change."""
        lines = [f"### {self.title}", "", "| metric | before | after | ratio / change |",
                 "|---|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {m} | {b} | {a} | {c} |" for m, b, a, c in self._table_rows()]
        lines.append("")
        lines.append("Ratios are before / after (compression, speed-up); MACs count conv and "
                     "linear multiply-adds, FLOPs = 2 x MACs.")  # fmt: skip
        return "\n".join(lines)

    def to_rich(self):
        """A ``rich.table.Table`` for terminals."""
        from rich.table import Table

        table = Table(title=self.title)
        table.add_column("metric")
        for col in ("before", "after", "ratio / change"):
            table.add_column(col, justify="right")
        for row in self._table_rows():
            table.add_row(*row)
        return table
