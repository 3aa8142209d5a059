"""``nnshrink run`` (recipes) and ``nnshrink compare`` (runs side by side)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import CLIError, add_json_arg, emit


def register(subparsers) -> None:
    """Add the ``run`` and ``compare`` subcommands."""
    p = subparsers.add_parser(
        "run",
        help="run a YAML recipe or a shipped preset",
        description="Run the stages of a recipe with a checkpoint after each; --resume continues.",
    )
    p.add_argument("recipe", help="recipe file (.yaml) or preset name (see --list)", nargs="?")
    p.add_argument("--out", default=None, help="output folder (default runs/<recipe name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--list", action="store_true", help="list the shipped presets")
    p.add_argument("--check", action="store_true", help="only validate the recipe")
    p.add_argument("--device", default=None,
                   help="override the recipe's device: auto, cpu, cuda or cuda:N")  # fmt: skip
    add_json_arg(p)
    p.set_defaults(func=run)

    c = subparsers.add_parser("compare", help="put several runs side by side (table + Pareto plot)")
    c.add_argument("runs", nargs="+", help="run folders (each with report.json)")
    c.add_argument("--out", default=None, help="folder for compare.md and pareto.png")
    add_json_arg(c)
    c.set_defaults(func=compare)


def run(args: argparse.Namespace) -> int:
    """Validate, then run a recipe."""
    from ..recipes import RecipeError, load_recipe, preset_names, run_recipe

    if args.list:
        for name in preset_names():
            print(name)
        return 0
    if not args.recipe:
        raise CLIError("give a recipe file or preset name (nnshrink run --list shows presets)")
    try:
        recipe = load_recipe(args.recipe)
        if args.device:
            import dataclasses

            from ..recipes import parse_recipe

            source = {**recipe.source, "device": args.device}
            recipe = dataclasses.replace(parse_recipe(source, base_dir=Path(args.recipe).parent),
                                         name=recipe.name)  # fmt: skip
    except RecipeError as exc:
        raise CLIError(str(exc)) from None
    if args.check:
        emit(args, {"valid": True, "name": recipe.name, "stages": [s.name for s in recipe.stages]},
             f"{recipe.name}: valid ({len(recipe.stages)} stages)")  # fmt: skip
        return 0
    out = Path(args.out or Path("runs") / recipe.name)

    def log(line: str) -> None:
        print(f"[nnshrink run] {line}", file=sys.stderr)

    try:
        result = run_recipe(recipe, out, resume=args.resume, progress=not args.json, log=log)
    except RecipeError as exc:
        raise CLIError(str(exc)) from None
    from ..train import is_main_process

    if not is_main_process():
        return 0  # under torchrun, rank 0 prints and writes the report
    payload = {"out": str(out), "report": str(result.report_json), "rows": result.rows}
    from rich.markdown import Markdown

    emit(args, payload, Markdown(result.report_md.read_text()), f"report: {result.report_md}")
    return 0


def compare(args: argparse.Namespace) -> int:
    """Final rows of several runs side by side, with a Pareto plot of size vs accuracy."""
    from ..recipes.plots import pareto_front, pareto_plot

    entries = []
    for folder in args.runs:
        path = Path(folder) / "report.json"
        if not path.is_file():
            raise CLIError(f"{folder}: no report.json (is it an nnshrink run folder?)")
        report = json.loads(path.read_text())
        final = report["rows"][-1]
        entries.append({"run": str(folder), **{k: final.get(k) for k in
                        ("top1", "size_bytes", "macs", "latency_ms", "latency_onnx_ms",
                         "compression", "speedup")}})  # fmt: skip
    lines = ["| run | top-1 | bytes | compression | MACs | eager ms | ORT ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for e in entries:
        top1 = "-" if e["top1"] is None else f"{100 * e['top1']:.2f}%"
        comp = "-" if e["compression"] is None else f"{e['compression']:.1f}x"
        lines.append(f"| {e['run']} | {top1} | {e['size_bytes']} | {comp} | {e['macs']} | "
                     f"{e['latency_ms']} | {e['latency_onnx_ms']} |")  # fmt: skip
    usable = [e for e in entries if e["top1"] is not None and e["size_bytes"]]
    front = pareto_front([(e["size_bytes"], e["top1"]) for e in usable])
    payload = {"runs": entries, "pareto": [usable[i]["run"] for i in front]}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if usable:
            pareto_plot([Path(e["run"]).name for e in usable], [e["size_bytes"] for e in usable],
                        [e["top1"] for e in usable], out / "pareto.png")  # fmt: skip
            lines += ["", "![pareto](pareto.png)"]
        (out / "compare.md").write_text("\n".join(lines) + "\n")
    emit(args, payload, "\n".join(lines))
    return 0
