"""The advisor's report: Pareto table (markdown + JSON), Pareto plot, and the reproducing recipe."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..utils import atomic_write_bytes, environment
from .budget import Measurement, drop_points

if TYPE_CHECKING:
    from .advisor import AdviceResult
    from .search import Evaluation

BYTES_KINDS = {"nns": ".nns file", "int8-onnx": "int8 ONNX file", "checkpoint": "checkpoint"}


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (all objectives minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_indices(measurements: Sequence[Measurement]) -> list[int]:
    """Indices of measurements not dominated in (higher top-1, fewer bytes, lower latency).

    A missing value counts as the worst.

    Example:
        >>> ms = [Measurement(top1=0.9, bytes=10, latency_ms=1.0),
        ...       Measurement(top1=0.8, bytes=20, latency_ms=2.0),
        ...       Measurement(top1=0.95, bytes=30, latency_ms=1.0)]
        >>> pareto_indices(ms)
        [0, 2]
    """
    inf = math.inf
    keys = [(-(m.top1 if m.top1 is not None else -inf), m.bytes if m.bytes is not None else inf,
             m.latency_ms if m.latency_ms is not None else inf) for m in measurements]  # fmt: skip
    return [i for i, k in enumerate(keys)
            if not any(dominates(o, k) for j, o in enumerate(keys) if j != i)]  # fmt: skip


def _fmt(value: Any, spec: str = ",") -> str:
    return "-" if value is None else format(value, spec)


def _row(label: str, m: Measurement, base_top1: float | None, tail: str) -> str:
    drop = drop_points(base_top1, m.top1)
    top1 = "-" if m.top1 is None else f"{100 * m.top1:.2f}%"
    return (f"| {label} | {top1} | {_fmt(drop, '+.2f')} | {_fmt(m.bytes)} "
            f"({BYTES_KINDS.get(m.bytes_kind, m.bytes_kind)}) | {_fmt(m.latency_ms, '.3f')} | "
            f"{_fmt(m.macs)} | {tail} |")  # fmt: skip


def render_markdown(result: AdviceResult) -> str:
    """The report as markdown: budget, verdict, Pareto table, screening, layer time shares."""
    b = result.budget
    limits = [f"{k} <= {v:,}" if isinstance(v, int) else f"{k} <= {v:.4g}"
              for k, v in result.budget.resource_limits.items()]  # fmt: skip
    if b.max_drop is not None:
        limits.append(f"top-1 drop <= {b.max_drop} pt")
    lines = [
        "# nnshrink advise", "",
        f"Budget: {', '.join(limits)}; latency at batch {b.batch_size}, {b.threads} thread(s), "
        f"{b.runtime}; search time limit {b.time_limit_s:g} s; fine-tuning "
        f"{'allowed' if b.finetune else 'not allowed'}.", "",
        f"**{result.message}**", "",
    ]  # fmt: skip
    if result.recipe_path is not None:
        lines += [f"Reproduce: `nnshrink run {result.recipe_path.name} --out run` "
                  f"(in `{result.out_dir}`).", ""]  # fmt: skip
    lines += [
        f"Search: {len(result.evaluations)} runs in {result.seconds:.0f} s; rungs (training "
        f"samples): {result.settings.get('rungs')}.", "",
        "| candidate | top-1 | drop (pt) | bytes | latency (ms) | MACs | budget |",
        "|---|---:|---:|---:|---:|---:|---|",
        _row("baseline", result.baseline, result.baseline.top1, "-"),
    ]  # fmt: skip
    measured = [e for e in result.evaluations if e.measurement is not None]
    front = set(pareto_indices([e.measurement for e in measured]))
    for i, e in enumerate(measured):
        verdict = "meets" if e.meets else "; ".join(e.violations)
        mark = (" **chosen**" if e is result.chosen else "") + (" (Pareto)" if i in front else "")
        lines.append(_row(e.label + mark, e.measurement, result.baseline.top1, verdict))
    for e in result.evaluations:
        if e.measurement is None:
            lines.append(f"| {e.label} | failed: {e.error} | | | | | |")
    lines += ["", "`@rN`: successive-halving rung N. Bytes: the deployable file (kind in "
              "brackets). Latency: median of 20 runs.", "",
              "## Zero-shot screening (technique stages only, no training)", "",
              "| candidate | family | top-1 | bytes | latency (ms) | MACs | kept |",
              "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for s in result.screened:
        m = s.measurement or Measurement()
        top1 = "-" if m.top1 is None else f"{100 * m.top1:.2f}%"
        kept = "yes" if s.kept else f"no: {s.reason}"
        lines.append(f"| {s.candidate.name} | {s.candidate.family} | {top1} | {_fmt(m.bytes)} | "
                     f"{_fmt(m.latency_ms, '.3f')} | {_fmt(m.macs)} | {kept} |")  # fmt: skip
    lines += ["", "## Where the baseline's time goes (eager, per layer)", "",
              "| layer | type | ms | share |", "|---|---|---:|---:|"]  # fmt: skip
    for r in result.latency_share[:12]:
        lines.append(f"| {r.name} | {r.type} | {r.ms:.4f} | {100 * r.share:.1f}% |")
    if result.plot is not None:
        lines += ["", f"![Pareto]({result.plot.name})"]
    return "\n".join(lines) + "\n"


def to_json(result: AdviceResult) -> dict[str, Any]:
    """The report as a JSON-able dict."""
    measured = [e for e in result.evaluations if e.measurement is not None]
    front = [measured[i].label for i in pareto_indices([e.measurement for e in measured])]
    return {
        "message": result.message,
        "budget": result.budget.to_dict(),
        "baseline": result.baseline.to_dict(),
        "chosen": result.chosen.to_dict() if result.chosen else None,
        "closest": result.closest.to_dict() if result.closest else None,
        "recipe": str(result.recipe_path) if result.recipe_path else None,
        "pareto": front,
        "evaluations": [e.to_dict() for e in result.evaluations],
        "screened": [s.to_dict() for s in result.screened],
        "latency_share": [vars(r) for r in result.latency_share],
        "seconds": result.seconds,
        "settings": result.settings,
        "environment": environment(result.settings.get("seed")),
    }


def pareto_plot(result: AdviceResult, path: str | Path) -> Path | None:
    """Top-1 vs bytes and vs latency for every evaluated candidate; budget lines; the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [e for e in result.evaluations if e.measurement is not None]
    if not measured:
        return None
    base = result.baseline
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label, limit in (
        (axes[0], "bytes", "bytes (log)", result.budget.max_bytes),
        (axes[1], "latency_ms", "latency ms (log)", result.budget.max_latency_ms),
    ):
        pts = [(getattr(e.measurement, key), 100 * (e.measurement.top1 or 0), e) for e in measured
               if getattr(e.measurement, key) is not None]  # fmt: skip
        for x, y, e in pts:
            color = "tab:green" if e.meets else "tab:gray"
            marker = "*" if e is result.chosen else "o"
            ax.scatter([x], [y], c=color, marker=marker, s=140 if marker == "*" else 30)
            ax.annotate(e.label, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if getattr(base, key) is not None and base.top1 is not None:
            ax.scatter([getattr(base, key)], [100 * base.top1], c="tab:blue", marker="s")
            ax.annotate("baseline", (getattr(base, key), 100 * base.top1), fontsize=7)
        if limit is not None:
            ax.axvline(limit, color="tab:red", ls="--", lw=1, label="budget")
            ax.legend(fontsize=7)
        if result.budget.max_drop is not None and base.top1 is not None:
            ax.axhline(100 * base.top1 - result.budget.max_drop, color="tab:red", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
    fig.suptitle("nnshrink advise: evaluated candidates (green: meets the budget, star: chosen)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def recipe_yaml(evaluation: Evaluation, header: str) -> str:
    """The evaluation's recipe as YAML (latency measured at every stage), after a comment."""
    source = dict(evaluation.recipe or {})
    source["measure"] = {**source.get("measure", {}), "latency": True}
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(source, sort_keys=False, default_flow_style=None, width=100)


def write_report(result: AdviceResult) -> None:
    """Write ``advice.md``, ``advice.json``, ``pareto.png`` and ``recipe.yaml`` (the chosen
    candidate; ``closest-recipe.yaml`` instead when nothing meets the budget)."""
    out = result.out_dir
    for e, name, what in ((result.chosen, "recipe.yaml", "chosen"),
                          (result.closest, "closest-recipe.yaml", "closest (violates the budget)")):  # fmt: skip
        if e is None:
            continue
        m = e.measurement
        header = (f"nnshrink advise: {what} candidate {e.label} ({e.candidate.family})\n"
                  f"measured: top-1 {100 * (m.top1 or 0):.2f}%, {m.bytes:,} bytes "
                  f"({BYTES_KINDS.get(m.bytes_kind, m.bytes_kind)}), latency "
                  f"{_fmt(m.latency_ms, '.3f')} ms, {m.macs:,} MACs\n"
                  f"run it with: nnshrink run {name} --out <dir>")  # fmt: skip
        path = out / name
        atomic_write_bytes(path, recipe_yaml(e, header).encode())
        if e is result.chosen:
            result.recipe_path = path
    result.plot = pareto_plot(result, out / "pareto.png")
    result.report_md = out / "advice.md"
    atomic_write_bytes(result.report_md, render_markdown(result).encode())
    result.report_json = out / "advice.json"
    atomic_write_bytes(result.report_json, json.dumps(to_json(result), indent=1,
                                                      default=str).encode())  # fmt: skip
