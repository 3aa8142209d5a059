"""Depth pruning vs channel pruning on ResNet-20 (1x28x28, Fashion-MNIST shape): MACs and latency.

Why this experiment: at batch 1 a ResNet-20 in ONNX Runtime is bound by per-operator overhead, so
cutting channels cuts MACs far more than time. Removing residual blocks (``BlockPruning``)
removes operators. Every variant — k of the 7 identity-shortcut blocks removed, alone and with a
share of the channels pruned — is timed against the dense model in one process, interleaved in
shuffled order (``nnshrink.metrics.latency.interleaved``, one runtime at a time), threads
pinned. Weights are untrained
(latency does not depend on them); block ranking uses a random batch. Writes
benchmarks/results/depth_resnet20_latency.json and prints a markdown table.

    PYTHONPATH=. .venv/bin/python benchmarks/depth_resnet20_latency.py [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from nnshrink import compress_, models
from nnshrink.metrics import count_macs, count_params
from nnshrink.metrics.latency import forward_call, interleaved, torch_threads
from nnshrink.pruning import BlockPruning, StructuredPruning
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"


def variants(blocks: list[int], channels: list[float], seed: int) -> dict[str, torch.nn.Module]:
    """``{"d{k}-c{r}": model}``: k blocks removed, then a channel ratio r pruned (l2)."""
    torch.manual_seed(seed)
    batch = torch.randn(16, 1, 28, 28)
    dense = models.create("resnet20", in_channels=1, input_size=28).eval()
    out = {}
    for k in blocks:
        shallow = copy.deepcopy(dense)
        if k:
            compress_(shallow, BlockPruning(remove=k), example_inputs=batch)
        for r in channels:
            model = copy.deepcopy(shallow)
            if r:
                compress_(model, StructuredPruning(ratio=r), example_inputs=batch)
            out[f"d{k}-c{r:g}"] = model.eval()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--blocks", default="0,2,3,4,5,6,7")
    p.add_argument("--channels", default="0,0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "depth_resnet20_latency.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    blocks = [int(b) for b in args.blocks.split(",")]
    channels = [float(c) for c in args.channels.split(",")]
    models_ = variants(blocks, channels, args.seed)
    x1 = torch.zeros(1, 1, 28, 28)
    fns = {}
    for name, model in models_.items():
        fns[f"ort:{name}"] = forward_call(model, x1, runtime="onnxruntime", threads=args.threads)

        def eager(m=model):
            with torch_threads(args.threads), torch.inference_mode():
                m(x1)

        fns[f"eager:{name}"] = eager
    # one runtime at a time: ORT's spinning pool threads would slow the eager calls after them
    stats = {}
    for rt in ("ort", "eager"):
        group = {k: f for k, f in fns.items() if k.startswith(f"{rt}:")}
        stats.update(interleaved(group, rounds=args.rounds, runs=args.runs, seed=args.seed))
    dense = "d0-c0"
    rows = {}
    for name, model in models_.items():
        row = {"macs": count_macs(model, x1), "params": count_params(model)}
        for rt in ("ort", "eager"):
            ms = stats[f"{rt}:{name}"]["median"]
            row[f"{rt}_b1_ms"] = ms
            row[f"{rt}_b1_speedup"] = stats[f"{rt}:{dense}"]["median"] / ms
        rows[name] = row
    lines = ["| blocks removed | channels pruned | MACs | params | ORT b1 | eager b1 |",
             "|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, r in rows.items():
        k, c = name[1:].split("-c")
        lines.append(
            f"| {k} | {float(c):.0%} | {r['macs'] / 1e6:.2f}M | {r['params']:,} | "
            f"{r['ort_b1_ms']:.3f} ms ({r['ort_b1_speedup']:.2f}x) | "
            f"{r['eager_b1_ms']:.3f} ms ({r['eager_b1_speedup']:.2f}x) |"
        )
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": "depth_resnet20_latency", "environment": environment(args.seed),
              "args": vars(args), "rows": rows, "markdown": table}  # fmt: skip
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
