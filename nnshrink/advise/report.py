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


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _row(label: str, m: Measurement, base_top1: float | None, tail: str,
         test: tuple[float | None, float | None] | None = None) -> str:  # fmt: skip
    """One table row; ``test``: ``(test top-1, baseline test top-1)`` when a val split is used."""
    drop = drop_points(base_top1, m.top1)
    cells = f"{_pct(m.top1)} | {_fmt(drop, '+.2f')} | "
    if test is not None:
        cells += f"{_pct(test[0])} | {_fmt(drop_points(test[1], test[0]), '+.2f')} | "
    return (f"| {label} | {cells}{_fmt(m.bytes)} "
            f"({BYTES_KINDS.get(m.bytes_kind, m.bytes_kind)}) | {_fmt(m.latency_ms, '.3f')} | "
            f"{_fmt(m.macs)} | {tail} |")  # fmt: skip


def uses_val(result: AdviceResult) -> bool:
    """Whether the search selected on a validation split (not on the test split)."""
    return result.settings.get("eval_split", "test") == "val"


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
    val = uses_val(result)
    if val:
        n = result.settings.get("val_size")
        lines += [f"Selection: top-1 on a validation split (the last {n:,} training samples, "
                  "never trained on); the budget's drop is judged there. The chosen (or closest) "
                  "candidate and the baseline were then measured once on the test split: that "
                  "is the accuracy to report.", ""]  # fmt: skip
        head = ("| candidate | val top-1 (selection) | val drop (pt) | test top-1 (reported) | "
                "test drop (pt) | bytes | latency (ms) | MACs | budget |")  # fmt: skip
        rule = "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    else:
        lines += ["Selection on the test split (`val_size=0`): the chosen accuracy is the best "
                  "of several on the same data, so it is optimistic.", ""]  # fmt: skip
        head = "| candidate | test top-1 (selection) | drop (pt) | bytes | latency (ms) | MACs | budget |"
        rule = "|---|---:|---:|---:|---:|---:|---|"
    base_test = result.baseline_test_top1

    def test_of(top: float | None) -> tuple[float | None, float | None] | None:
        return (top, base_test) if val else None

    lines += [
        f"Search: {len(result.evaluations)} runs in {result.seconds:.0f} s; rungs (training "
        f"samples): {result.settings.get('rungs')}.", "", head, rule,
        _row("baseline", result.baseline, result.baseline.top1, "-", test_of(base_test)),
    ]  # fmt: skip
    measured = [e for e in result.evaluations if e.measurement is not None]
    front = set(pareto_indices([e.measurement for e in measured]))
    for i, e in enumerate(measured):
        verdict = "meets" if e.meets else "; ".join(e.violations)
        mark = (" **chosen**" if e is result.chosen else "") + (" (Pareto)" if i in front else "")
        lines.append(_row(e.label + mark, e.measurement, result.baseline.top1, verdict,
                          test_of(e.test_top1)))  # fmt: skip
    for e in result.evaluations:
        if e.measurement is None:
            lines.append(f"| {e.label} | failed: {e.error} |" + " |" * (rule.count("|") - 3))
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
    note = result.settings.get("sensitivity")
    if result.sensitivity is not None:
        lines += ["", "## Per-layer sensitivity (one layer compressed alone, no training)", "",
                  f"Top-1 drop in points on the selection data ({note}); `N bit`: k-means "
                  "sharing, `sp S`: magnitude pruning to sparsity S, `ch -R`: a fraction R of "
                  "the output channels removed. The `*-sens` candidates take their per-layer "
                  "settings from this table: the least summed drop that fits the budget.", "",
                  result.sensitivity.to_markdown()]  # fmt: skip
    elif note:
        lines += ["", f"Per-layer sensitivity: {note}."]
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
        "baseline_test_top1": result.baseline_test_top1,
        "selection_split": result.settings.get("eval_split", "test"),
        "chosen": result.chosen.to_dict() if result.chosen else None,
        "closest": result.closest.to_dict() if result.closest else None,
        "recipe": str(result.recipe_path) if result.recipe_path else None,
        "pareto": front,
        "evaluations": [e.to_dict() for e in result.evaluations],
        "screened": [s.to_dict() for s in result.screened],
        "latency_share": [vars(r) for r in result.latency_share],
        "sensitivity": result.sensitivity.to_dict() if result.sensitivity else None,
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
        accuracy = f"top-1 {100 * (m.top1 or 0):.2f}%"
        if uses_val(result):
            accuracy = f"val {accuracy} (selection), test top-1 {_pct(e.test_top1)}"
        header = (f"nnshrink advise: {what} candidate {e.label} ({e.candidate.family})\n"
                  f"measured: {accuracy}, {m.bytes:,} bytes "
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
