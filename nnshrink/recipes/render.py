"""The run report as markdown: one row per stage with ratios against the original, plots."""

from __future__ import annotations

from typing import Any


def _fmt(value: Any, pct: bool = False, suffix: str = "") -> str:
    if value is None:
        return "-"
    if pct:
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.3g}{suffix}"
    return f"{value:,}{suffix}"


def render_markdown(name: str, rows, state, plots, *, headline: str = "top1") -> str:
    """The run report as markdown: one row per stage, ratios vs the original, plots.

    Args:
        name: the recipe name.
        rows: one measurement row per stage (the first is the original model).
        state: the run state (finished stages with their details).
        plots: plot files to embed.
        headline: the metric key shown in the second column (``top1`` for classifiers).
    """
    pct = headline in ("top1", "top5")
    title = "top-1" if headline == "top1" else headline
    lines = [f"# Run report: {name}", "",
             f"| stage | {title} | params | non-zero | MACs | bytes | compression | eager ms | "
             "speed-up | ORT ms | ORT speed-up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['label']} | {_fmt(r.get(headline), pct=pct)} | {_fmt(r.get('params'))} | "
            f"{_fmt(r.get('nonzero_params'))} | {_fmt(r.get('macs'))} | {_fmt(r.get('size_bytes'))} | "
            f"{_fmt(r.get('compression'), suffix='x')} | {_fmt(r.get('latency_ms'))} | "
            f"{_fmt(r.get('speedup'), suffix='x')} | {_fmt(r.get('latency_onnx_ms'))} | "
            f"{_fmt(r.get('speedup_onnx'), suffix='x')} |"
        )
    lines += ["", "Bytes: the size on disk of the artefact written for the stage (checkpoint, "
              "`.nns`, `.onnx`); dense fp32 where none could be written. Latency: median, batch "
              "and threads as in the recipe's `measure`.", ""]  # fmt: skip
    for entry in state["finished"]:
        result = entry.get("details", {}).get("result")
        if isinstance(result, dict) and isinstance(result.get("layers"), list):
            layers = result["layers"]
            if layers and isinstance(layers[0], dict):
                keys = list(layers[0])
                lines += [f"## Stage {entry['index'] + 1} ({entry['stage']}): per layer", "",
                          "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]  # fmt: skip
                for layer in layers:
                    lines.append("| " + " | ".join(str(layer.get(k)) for k in keys) + " |")
                lines.append("")
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(lines)
