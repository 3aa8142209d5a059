"""Report plots (matplotlib, PNG): accuracy vs size and vs latency per stage, Pareto fronts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402


def _stage_plot(rows, x_key: str, x_label: str, path: Path, metric: str = "top1") -> Path | None:
    scale = 100 if metric in ("top1", "top5") else 1
    points = [(r[x_key], scale * r[metric], r["label"]) for r in rows
              if r.get(x_key) is not None and r.get(metric) is not None]  # fmt: skip
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    xs, ys, labels = zip(*points)
    ax.plot(xs, ys, "-o", color="tab:blue")
    for x, y, label in points:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 (%)" if metric == "top1" else metric)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def stage_plots(
    rows: Sequence[dict[str, Any]], out_dir: str | os.PathLike, *, metric: str = "top1"
) -> list[Path]:
    """The headline metric vs bytes and vs measured latency, one point per stage."""
    out = Path(out_dir)
    made = [
        _stage_plot(rows, "size_bytes", "size (bytes, log)", out / "accuracy_vs_size.png", metric),
        _stage_plot(
            rows, "latency_ms", "eager latency (ms, log)", out / "accuracy_vs_latency.png", metric
        ),  # fmt: skip
        _stage_plot(
            rows,
            "latency_onnx_ms",
            "ONNX Runtime latency (ms, log)",
            out / "accuracy_vs_onnx_latency.png",
            metric,
        ),  # fmt: skip
    ]
    return [p for p in made if p is not None]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (smaller x and higher y are better).

    Example:
        >>> pareto_front([(1, 0.9), (2, 0.95), (3, 0.9), (0.5, 0.5)])
        [3, 0, 1]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_plot(
    labels: Sequence[str],
    sizes: Sequence[float],
    accuracies: Sequence[float],
    path: str | os.PathLike,
) -> Path:
    """Scatter of runs (size vs top-1) with their Pareto front drawn."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(sizes, [100 * a for a in accuracies], color="tab:gray")
    for label, x, y in zip(labels, sizes, accuracies):
        ax.annotate(label, (x, 100 * y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(list(zip(sizes, accuracies)))
    ax.plot([sizes[i] for i in front], [100 * accuracies[i] for i in front], "-o", color="tab:red",
            label="Pareto front")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("size (bytes, log)")
    ax.set_ylabel("top-1 (%)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
