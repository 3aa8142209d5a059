"""Structured pruning of ResNet-20 (3x32x32) to half the MACs: MACs, params, measured latency.

Dense and pruned models are timed in interleaved rounds in one process (eager PyTorch and ONNX
Runtime, threads pinned, best median of the rounds). Writes
benchmarks/results/structured_resnet20_latency.json.

    .venv/bin/python benchmarks/structured_resnet20_latency.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import nnshrink as ns
from nnshrink.metrics import count_macs, measure_latency
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for shortcut, round_to in (("A", 1), ("A", 8), ("B", 1), ("B", 8)):
        torch.manual_seed(0)
        dense = ns.models.create("resnet20", in_channels=3, input_size=32, shortcut=shortcut)
        pruned = ns.models.create("resnet20", in_channels=3, input_size=32, shortcut=shortcut)
        pruned.load_state_dict(dense.state_dict())
        x1 = torch.randn(1, 3, 32, 32)
        t0 = time.perf_counter()
        config = ns.StructuredPruning(target_macs=count_macs(dense, x1) // 2, round_to=round_to)
        summary = ns.compress_(pruned, config, example_inputs=x1)
        row = {"macs_before": summary.macs_before, "macs_after": summary.macs_after,
               "params_before": summary.params_before, "params_after": summary.params_after,
               "prune_seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
        for runtime in ("eager", "onnxruntime"):
            for batch in (1, 32):
                x = torch.randn(batch, 3, 32, 32)
                d, p = [], []
                for _ in range(args.rounds):
                    for model, times in ((dense, d), (pruned, p)):
                        stats = measure_latency(model, x, runtime=runtime, threads=args.threads,
                                                runs=args.runs)  # fmt: skip
                        times.append(stats.median_ms)
                key = f"{runtime}_b{batch}"
                row[key] = {"dense_ms": min(d), "pruned_ms": min(p), "speedup": min(d) / min(p)}
        rows[f"option-{shortcut}-round_to-{round_to}"] = row
        print(shortcut, round_to, json.dumps(row))
    RESULTS.mkdir(exist_ok=True)
    record = {"benchmark": "structured_resnet20_latency", "environment": environment(0),
              "args": vars(args), "rows": rows}  # fmt: skip
    (RESULTS / "structured_resnet20_latency.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
