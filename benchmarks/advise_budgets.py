"""`nnshrink advise` on the issue's budgets, compared with the best hand-written preset.

Cases (issue #9):
  * LeNet-5 on MNIST, <= 20 KB and <= 0.3 pt top-1 drop (storage-bound);
  * LeNet-5 on MNIST, <= half the baseline latency and <= 0.5 pt drop (latency-bound);
  * ResNet-20 on Fashion-MNIST, <= half the latency and <= 1 pt drop (``--models resnet20``).

Each case trains (or reuses) a baseline checkpoint, runs ``advise`` within ``--time-limit``, then
runs the matching shipped preset's compression stages from the same checkpoint (its ``train``
stage dropped) and measures it the same way. Latency: ONNX Runtime, batch 1, ``--threads``; the
budget is half the baseline's median measured here. Writes
benchmarks/results/advise_budgets.json (and prints a markdown table).

    .venv/bin/python benchmarks/advise_budgets.py [--models lenet5,resnet20] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from nnshrink.advise import Budget, advise, judge
from nnshrink.advise.advisor import BASELINE_FILE
from nnshrink.advise.measure import latency_ms, measure_run
from nnshrink.data import VAL_SIZE, input_shape, loader
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.models import create
from nnshrink.recipes import parse_recipe, run_recipe
from nnshrink.recipes.schema import PRESET_DIR
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"

CASES = {
    "lenet5": [
        {"case": "lenet5-mnist-20KB", "data": "mnist", "max_bytes": 20_000, "max_drop": 0.003,
         "preset": "deep-compression-lenet5"},
        {"case": "lenet5-mnist-half-latency", "data": "mnist", "latency_ratio": 0.5,
         "max_drop": 0.005, "preset": "int8-ptq-lenet5"},
    ],
    "resnet20": [
        {"case": "resnet20-fashion-half-latency", "data": "fashion-mnist", "latency_ratio": 0.5,
         "max_drop": 0.01, "preset": "channel-pruning-kd-resnet20-fashion"},
    ],
}  # fmt: skip
TRAIN = {"lenet5": {"epochs": 2, "lr": 2e-3, "optimizer": "adam"},
         "resnet20": {"epochs": 4, "lr": 0.05, "optimizer": "sgd", "weight_decay": 5e-4}}  # fmt: skip


def baseline_checkpoint(name: str, data: str, work: Path, train_limit: int | None) -> Path:
    """Train the baseline once (reused on later runs)."""
    # trained without the validation samples the advisor selects on (the last VAL_SIZE)
    path = work / f"{name}-{data}-holdout{VAL_SIZE}.safetensors"
    if path.is_file():
        return path
    torch.manual_seed(0)
    c, h, _ = input_shape(data)
    model = create(name, in_channels=c, input_size=h)
    t0 = time.perf_counter()
    fit(model, loader(data, "train", 128, train=True, limit=train_limit, holdout=VAL_SIZE),
        progress=False, **TRAIN[name])  # fmt: skip
    metrics = evaluate(model, loader(data, "test", 1000))
    print(f"trained {name} on {data} in {time.perf_counter() - t0:.0f} s: {metrics}")
    work.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path, metrics=metrics)
    return path


def run_preset(
    preset: str,
    case_dir: Path,
    data: dict,
    budget: Budget,
    base_top1: float,
    structure_only: bool = False,
) -> dict:
    """The preset's stages after its ``train`` stage, from the advisor's baseline checkpoint.

    ``structure_only`` also drops its recovery stages (fine-tune, distill): bytes, MACs and
    latency are set by the structure, so a preset that misses a resource limit is shown missing
    it without the hours its recovery would take on this machine; its top-1 is then untrained.
    """
    source = yaml.safe_load((PRESET_DIR / f"{preset}.yaml").read_text())
    skip = {"train"} | ({"finetune", "distill"} if structure_only else set())
    stages = [s for s in source["stages"] if next(iter(s)) not in skip]
    stages = [s for s in stages if next(iter(s)) != "export"]  # the export is not measured
    recipe = {"name": f"{preset}-from-checkpoint", "model": {"checkpoint": BASELINE_FILE},
              "data": {**source["data"], **data, "eval_split": "val", "val_size": VAL_SIZE},
              "seed": 0,
              "measure": {"latency": False, "threads": budget.threads, "batch_size": 1},
              "stages": stages}  # fmt: skip
    t0 = time.perf_counter()
    result = run_recipe(parse_recipe(recipe, base_dir=case_dir), case_dir / "preset",
                        progress=False, log=lambda _l: None)  # fmt: skip
    example = torch.zeros(1, *input_shape(recipe["data"]["name"]))  # measure_run takes inputs
    m, artifact = measure_run(result, budget, example)
    return {"preset": preset, "structure_only": structure_only, "stages": stages,
            "seconds": round(time.perf_counter() - t0, 1),
            "measurement": m.to_dict(), "artifact": str(artifact),
            **judge(budget, m, base_top1)}  # fmt: skip


def run_case(spec: dict, ckpt: Path, work: Path, args) -> dict:
    case_dir = work / spec["case"]
    shape = torch.zeros(1, *input_shape(spec["data"]))  # example inputs
    limit = args.limit
    if "latency_ratio" in spec:
        model, _ = load_checkpoint(ckpt)
        probe = Budget(max_latency_ms=1.0, threads=args.threads)
        base_ms = min(latency_ms(model, probe, shape, runs=100) for _ in range(3))
        max_latency = spec["latency_ratio"] * base_ms
    else:
        base_ms, max_latency = None, None
    budget = Budget(max_bytes=spec.get("max_bytes"), max_latency_ms=max_latency,
                    max_drop=spec["max_drop"], threads=args.threads,
                    time_limit_s=args.time_limit)  # fmt: skip
    t0 = time.perf_counter()
    res = advise(ckpt, spec["data"], budget, out_dir=case_dir, limit=limit,
                 train_limit=args.train_limit, max_candidates=args.max_candidates,
                 progress=False)  # fmt: skip
    search_s = time.perf_counter() - t0
    record = {
        "case": spec["case"], "budget": budget.to_dict(), "baseline_latency_probe_ms": base_ms,
        "baseline": res.baseline.to_dict(), "baseline_test_top1": res.baseline_test_score,
        "message": res.message,
        "search_seconds": round(search_s, 1), "runs": len(res.evaluations),
        "chosen": res.chosen.to_dict() if res.chosen else None,
        "closest": res.closest.to_dict() if res.closest else None,
        "report": str(res.report_md),
    }  # fmt: skip
    if not args.no_preset:
        data = {k: v for k, v in (("train_limit", args.train_limit), ("limit", args.limit)) if v}
        record["preset"] = run_preset(spec["preset"], case_dir, data, budget, res.baseline.score,
                                      structure_only=args.preset_structure_only)  # fmt: skip
    return record


def _cell(m: dict | None, base: dict) -> str:
    if not m:
        return "-"
    drop = 100 * (base["score"] - m["score"])
    lat = "-" if m.get("latency_ms") is None else f"{m['latency_ms']:.3f} ms"
    return f"{100 * m['score']:.2f}% ({drop:+.2f} pt), {m['bytes']:,} B ({m['bytes_kind']}), {lat}"


def _test(top1: float | None, base: float | None) -> str:
    if top1 is None or base is None:
        return "-"
    return f"{100 * top1:.2f}% ({100 * (top1 - base):+.2f} pt)"


def _base_test(r: dict) -> str:
    t = r.get("baseline_test_top1")
    return "-" if t is None else f"{100 * t:.2f}%"


def markdown(records: list[dict]) -> str:
    """Accuracies in the cells are val top-1 (what the search selects on); the test column is
    measured once, after the choice."""
    lines = ["| case | baseline (val) | advise: chosen (or closest), val | test top-1 (base -> "
             "chosen) | meets | search | preset (val) | preset meets |",
             "|---|---|---|---|---|---:|---|---|"]  # fmt: skip
    for r in records:
        pick = r["chosen"] or r["closest"] or {}
        label = pick.get("label", "-") + ("" if r["chosen"] else " (closest)")
        base = r["baseline"]
        preset = r.get("preset") or {}
        lines.append(
            f"| {r['case']} | {_cell(base, base)} | {label}: "
            f"{_cell(pick.get('measurement'), base)} | "
            f"{_base_test(r)} -> {_test(pick.get('test_score'), r.get('baseline_test_top1'))} | "
            f"{'yes' if r['chosen'] else 'no'} | "
            f"{r['search_seconds']:.0f} s, {r['runs']} runs | {preset.get('preset', '-')}: "
            f"{_cell(preset.get('measurement'), base)} | "
            f"{'yes' if preset.get('meets') else 'no: ' + '; '.join(preset.get('violations', []))} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5", help="comma list: lenet5, resnet20")
    p.add_argument("--time-limit", type=float, default=900.0, help="advise time limit per case")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-limit", type=int, default=None, help="training samples (all)")
    p.add_argument("--limit", type=int, default=None, help="test samples (all)")
    p.add_argument("--max-candidates", type=int, default=8)
    p.add_argument("--work", default="runs/advise_budgets", help="checkpoints and run folders")
    p.add_argument("--cases", default="", help="comma list of case names (default: all)")
    p.add_argument("--no-preset", action="store_true", help="skip the preset comparison")
    p.add_argument(
        "--preset-structure-only",
        action="store_true",
        help="run the preset without its recovery stages (resources only)",
    )
    p.add_argument("--out", default=str(RESULTS / "advise_budgets.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    records = []
    for name in args.models.split(","):
        for spec in CASES[name]:
            if args.cases and spec["case"] not in args.cases.split(","):
                continue
            ckpt = baseline_checkpoint(name, spec["data"], work, args.train_limit)
            record = run_case(spec, ckpt, work, args)
            print(json.dumps({k: record[k] for k in ("case", "message", "search_seconds")}))
            records.append(record)
    table = markdown(records)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "advise_budgets", "environment": environment(0),
                               "args": vars(args), "cases": records, "markdown": table},
                              indent=1, default=str))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
