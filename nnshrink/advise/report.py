"""The advisor's report: Pareto table (markdown + JSON), Pareto plot, and the reproducing recipe.

Scores are the metric's headline value: top-1 / top-5 are shown as percentages and their drops
in points; any other metric in its own units.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..utils import atomic_write_bytes, environment
from .budget import FRACTION_METRICS, Measurement, goodness, metric_drop

if TYPE_CHECKING:
    from .advisor import AdviceResult
    from .search import Evaluation

BYTES_KINDS = {"nns": ".nns file", "int8-onnx": "int8 ONNX file", "checkpoint": "checkpoint"}


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (all objectives minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_indices(measurements: Sequence[Measurement], higher_is_better: bool = True) -> list[int]:
    """Indices of measurements not dominated in (better score, fewer bytes, lower latency).

    A missing value counts as the worst.

    Example:
        >>> ms = [Measurement(score=0.9, bytes=10, latency_ms=1.0),
        ...       Measurement(score=0.8, bytes=20, latency_ms=2.0),
        ...       Measurement(score=0.95, bytes=30, latency_ms=1.0)]
        >>> pareto_indices(ms), pareto_indices(ms, higher_is_better=False)
        ([0, 2], [0, 1])
    """
    inf = math.inf
    keys = [(-goodness(m.score, higher_is_better), m.bytes if m.bytes is not None else inf,
             m.latency_ms if m.latency_ms is not None else inf) for m in measurements]  # fmt: skip
    return [i for i, k in enumerate(keys)
            if not any(dominates(o, k) for j, o in enumerate(keys) if j != i)]  # fmt: skip


def _fmt(value: Any, spec: str = ",") -> str:
    return "-" if value is None else format(value, spec)


def format_score(value: float | None, headline: str = "top1") -> str:
    """A score as the report shows it: ``97.50%`` for top-1 / top-5, else 4 significant digits.

    Example:
        >>> format_score(0.975), format_score(0.0312, "error"), format_score(None)
        ('97.50%', '0.0312', '-')
    """
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if headline in FRACTION_METRICS else f"{value:.4g}"


def format_drop(value: float | None, headline: str = "top1") -> str:
    """A drop as the report shows it: points for top-1 / top-5, else the metric's units.

    Example:
        >>> format_drop(0.005), format_drop(-0.02, "error")
        ('+0.50 pt', '-0.02')
    """
    if value is None:
        return "-"
    return f"{100 * value:+.2f} pt" if headline in FRACTION_METRICS else f"{value:+.4g}"


def _row(label: str, m: Measurement, base: float | None, tail: str, metric: dict[str, Any],
         test: tuple[float | None, float | None] | None = None) -> str:  # fmt: skip
    """One table row; ``test``: ``(test score, baseline test score)`` when there is test data."""
    h, hib = metric["headline"], metric["higher_is_better"]
    cells = f"{format_score(m.score, h)} | {format_drop(metric_drop(base, m.score, hib), h)} | "
    if test is not None:
        cells += (f"{format_score(test[0], h)} | "
                  f"{format_drop(metric_drop(test[1], test[0], hib), h)} | ")  # fmt: skip
    return (f"| {label} | {cells}{_fmt(m.bytes)} "
            f"({BYTES_KINDS.get(m.bytes_kind, m.bytes_kind)}) | {_fmt(m.latency_ms, '.3f')} | "
            f"{_fmt(m.macs)} | {tail} |")  # fmt: skip


SPLIT_LABELS = {"val": "val", "train-holdout": "held-back"}


def render_markdown(result: AdviceResult) -> str:
    """The report as markdown: budget, verdict, Pareto table, screening, layer time shares."""
    b = result.budget
    metric = result.settings.get("metric") or {"headline": "top1", "higher_is_better": True}
    h, hib = metric["headline"], metric["higher_is_better"]
    limits = [f"{k} <= {v:,}" if isinstance(v, int) else f"{k} <= {v:.4g}"
              for k, v in result.budget.resource_limits.items()]  # fmt: skip
    if b.max_drop is not None:
        points = f" ({100 * b.max_drop:g} pt)" if h in FRACTION_METRICS else ""
        limits.append(f"{h} drop <= {b.max_drop:g}{points}")
    lines = [
        "# nnshrink advise", "",
        f"Budget: {', '.join(limits)}; latency at batch {b.batch_size}, {b.threads} thread(s), "
        f"{b.runtime}; search time limit {b.time_limit_s:g} s; fine-tuning "
        f"{'allowed' if b.finetune else 'not allowed'}.", "",
        f"**{result.message}**", "",
    ]  # fmt: skip
    if result.recipe_path is not None:
        recipe = result.chosen.recipe or {}
        if "model" in recipe and "data" in recipe:
            lines += [f"Reproduce: `nnshrink run {result.recipe_path.name} --out run` "
                      f"(in `{result.out_dir}`).", ""]  # fmt: skip
        else:
            lines += [f"Reproduce: `{result.recipe_path.name}` (in `{result.out_dir}`) names what "
                      "came by reference; run it with `run_recipe(load_recipe(path), out, "
                      "model=..., data=...)` for the Python objects (see its header).", ""]  # fmt: skip
    notes = result.settings.get("recipe_notes") or []
    if notes:
        lines += ["Recipes: " + "; ".join(notes) + ".", ""]
    split = SPLIT_LABELS.get(result.settings.get("selection_split"), "selection")
    has_test = bool(result.settings.get("has_test", True))
    direction = "higher" if hib else "lower"
    lines += [f"Metric: `{metric.get('name', h)}`, headline `{h}` ({direction} is better); "
              "drops are in its own units" + (" (shown in points)" if h in FRACTION_METRICS
                                              else "") + ".", "",
              f"Selection: {h} on {result.settings.get('selection', 'the selection data')}; "
              "every candidate is compared there and the budget's drop is judged there, never "
              "on test."
              + (" The chosen (or closest) candidate and the baseline were then measured once "
                 "on the test data: that is the number to report." if has_test
                 else " The data have no test batches: no test number is reported."),
              ""]  # fmt: skip
    if has_test:
        head = (f"| candidate | {split} {h} (selection) | {split} drop | test {h} (reported) | "
                "test drop | bytes | latency (ms) | MACs | budget |")  # fmt: skip
        rule = "|---|---:|---:|---:|---:|---:|---:|---:|---|"
    else:
        head = (f"| candidate | {split} {h} (selection) | {split} drop | bytes | latency (ms) | "
                "MACs | budget |")  # fmt: skip
        rule = "|---|---:|---:|---:|---:|---:|---|"
    base_test = result.baseline_test_score

    def test_of(value: float | None) -> tuple[float | None, float | None] | None:
        return (value, base_test) if has_test else None

    base = result.baseline.score
    lines += [
        f"Search: {len(result.evaluations)} runs in {result.seconds:.0f} s; rungs (training "
        f"samples): {result.settings.get('rungs')}.", "", head, rule,
        _row("baseline", result.baseline, base, "-", metric, test_of(base_test)),
    ]  # fmt: skip
    measured = [e for e in result.evaluations if e.measurement is not None]
    front = set(pareto_indices([e.measurement for e in measured], hib))
    for i, e in enumerate(measured):
        verdict = "meets" if e.meets else "; ".join(e.violations)
        mark = (" **chosen**" if e is result.chosen else "") + (" (Pareto)" if i in front else "")
        lines.append(_row(e.label + mark, e.measurement, base, verdict, metric,
                          test_of(e.test_score)))  # fmt: skip
    for e in result.evaluations:
        if e.measurement is None:
            lines.append(f"| {e.label} | failed: {e.error} |" + " |" * (rule.count("|") - 3))
    lines += ["", "`@rN`: successive-halving rung N. Bytes: the deployable file (kind in "
              "brackets). Latency: median of 20 runs.", "",
              "## Zero-shot screening (technique stages only, no training)", "",
              f"| candidate | family | {h} | bytes | latency (ms) | MACs | kept |",
              "|---|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for s in result.screened:
        m = s.measurement or Measurement()
        kept = "yes" if s.kept else f"no: {s.reason}"
        lines.append(f"| {s.candidate.name} | {s.candidate.family} | {format_score(m.score, h)} | "
                     f"{_fmt(m.bytes)} | {_fmt(m.latency_ms, '.3f')} | {_fmt(m.macs)} | {kept} |")  # fmt: skip
    note = result.settings.get("sensitivity")
    if result.sensitivity is not None:
        lines += ["", "## Per-layer sensitivity (one layer compressed alone, no training)", "",
                  f"Drop of {h} ({'points' if h in FRACTION_METRICS else 'its own units'}) on "
                  f"the selection data ({note}); `N bit`: k-means "
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
    front = [measured[i].label
             for i in pareto_indices([e.measurement for e in measured], result.higher_is_better)]  # fmt: skip
    return {
        "message": result.message,
        "budget": result.budget.to_dict(),
        "metric": result.settings.get("metric"),
        "baseline": result.baseline.to_dict(),
        "baseline_test_score": result.baseline_test_score,
        "selection_split": result.settings.get("selection_split"),
        "selection": result.settings.get("selection"),
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
    """Score vs bytes and vs latency for every evaluated candidate; budget lines; the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [e for e in result.evaluations if e.measurement is not None]
    if not measured:
        return None
    base = result.baseline
    h, hib = result.headline, result.higher_is_better
    scale = 100.0 if h in FRACTION_METRICS else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label, limit in (
        (axes[0], "bytes", "bytes (log)", result.budget.max_bytes),
        (axes[1], "latency_ms", "latency ms (log)", result.budget.max_latency_ms),
    ):
        pts = [(getattr(e.measurement, key), scale * e.measurement.score, e) for e in measured
               if getattr(e.measurement, key) is not None and e.measurement.score is not None]  # fmt: skip
        for x, y, e in pts:
            color = "tab:green" if e.meets else "tab:gray"
            marker = "*" if e is result.chosen else "o"
            ax.scatter([x], [y], c=color, marker=marker, s=140 if marker == "*" else 30)
            ax.annotate(e.label, (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if getattr(base, key) is not None and base.score is not None:
            ax.scatter([getattr(base, key)], [scale * base.score], c="tab:blue", marker="s")
            ax.annotate("baseline", (getattr(base, key), scale * base.score), fontsize=7)
        if limit is not None:
            ax.axvline(limit, color="tab:red", ls="--", lw=1, label="budget")
            ax.legend(fontsize=7)
        if result.budget.max_drop is not None and base.score is not None:
            worst = (
                base.score - result.budget.max_drop if hib else base.score + result.budget.max_drop
            )
            ax.axhline(scale * worst, color="tab:red", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{h} (%)" if scale == 100.0 else h)
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
    h = result.headline
    split = SPLIT_LABELS.get(result.settings.get("selection_split"), "selection")
    notes = "".join(f"\n{n}" for n in result.settings.get("recipe_notes", []))
    for e, name, what in ((result.chosen, "recipe.yaml", "chosen"),
                          (result.closest, "closest-recipe.yaml", "closest (violates the budget)")):  # fmt: skip
        if e is None:
            continue
        m = e.measurement
        score = f"{split} {h} {format_score(m.score, h)} (selection)"
        if result.settings.get("has_test", True):
            score += f", test {h} {format_score(e.test_score, h)}"
        recipe = e.recipe or {}
        how = (
            f"nnshrink run {name} --out <dir>"
            if "model" in recipe and "data" in recipe
            else "nnshrink.recipes.run_recipe(load_recipe(path), out, model=..., data=...)"
        )
        header = (f"nnshrink advise: {what} candidate {e.label} ({e.candidate.family})\n"
                  f"measured: {score}, {m.bytes:,} bytes "
                  f"({BYTES_KINDS.get(m.bytes_kind, m.bytes_kind)}), latency "
                  f"{_fmt(m.latency_ms, '.3f')} ms, {m.macs:,} MACs\n"
                  f"run it with: {how}{notes}")  # fmt: skip
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
