"""Re-time what `advise_budgets.py` chose, beside its baseline, outside the search.

The advisor judges latency inside a long search on a shared machine, and keeps each candidate's
lowest measurement. This script is the independent check: the baseline checkpoint and the chosen
(or closest) artifact of each case are timed in interleaved, shuffled rounds in one quiet process
(``nnshrink.metrics.latency.interleaved``, ONNX Runtime, the budget's batch size and threads),
``--repeats`` times. It records the medians and the ratio chosen / baseline next to the case in
the same JSON (key ``retimed``, or ``--key``) and prints them. ONNX Runtime sessions park their
workers after each call (``stop_spinning``), so the idle one does not slow the one being timed.

    PYTHONPATH=. .venv/bin/python benchmarks/advise_retime.py benchmarks/results/X.json \
        [--baseline CKPT]

The run folders named in the JSON must still exist (the default ``--work`` of the benchmark).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nnshrink.data import VAL_SIZE, input_shape
from nnshrink.io import load_checkpoint
from nnshrink.metrics.latency import forward_call, interleaved
from nnshrink.utils import environment


def call_of(path: Path, x: torch.Tensor, threads: int):
    """One ONNX Runtime call of an artifact: an int8 ONNX file as is, a checkpoint exported."""
    if path.suffix == ".onnx":
        return forward_call(None, x, runtime="onnxruntime", threads=threads,
                            onnx_bytes=path.read_bytes(), stop_spinning=True)  # fmt: skip
    model, _ = load_checkpoint(path)
    return forward_call(model.eval(), x, runtime="onnxruntime", threads=threads,
                        stop_spinning=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("--baseline", type=Path, default=None, help="default: from the JSON's --work")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--key", default="retimed",
                   help="JSON key of the record, so a rerun can sit beside an earlier one")  # fmt: skip
    args = p.parse_args()
    record = json.loads(args.json.read_text())
    work = Path(record["args"]["work"])
    for case in record["cases"]:
        pick = case.get("chosen") or case.get("closest")
        budget = case["budget"]
        if not pick or budget.get("max_latency_ms") is None:
            continue
        data = "mnist" if case["case"].startswith("lenet5") else "fashion-mnist"
        name = case["case"].split("-")[0]
        base = args.baseline or work / f"{name}-{data}-holdout{VAL_SIZE}.safetensors"
        threads = budget["threads"]
        x = torch.zeros(budget["batch_size"], *input_shape(data))
        fns = {k: call_of(Path(v), x, threads)
               for k, v in (("baseline", base), ("chosen", pick["artifact"]))}  # fmt: skip
        repeats = []
        for seed in range(args.repeats):
            stats = interleaved(fns, rounds=args.rounds, runs=args.runs, seed=seed)
            b, c = stats["baseline"]["median"], stats["chosen"]["median"]
            repeats.append({"baseline_ms": b, "chosen_ms": c, "ratio": c / b})
        case[args.key] = {"label": pick["label"], "baseline": str(base), "repeats": repeats,
                           "rounds": args.rounds, "runs": args.runs, "threads": threads,
                           "environment": environment(0)}  # fmt: skip
        ratios = ", ".join(f"{r['ratio']:.3f}" for r in repeats)
        print(f"{case['case']}: {pick['label']} / baseline = {ratios} "
              f"(limit {budget['max_latency_ms']:.3f} ms = ratio "
              f"{budget['max_latency_ms'] / case['baseline_latency_probe_ms']:.2f})")  # fmt: skip
    args.json.write_text(json.dumps(record, indent=1, default=str))
    print(f"updated {args.json}")


if __name__ == "__main__":
    main()
