"""Structured pruning of ResNet-20 (3x32x32) to half the MACs: MACs, params, measured latency.

Dense and pruned models are timed in interleaved rounds in one process (eager PyTorch and ONNX
Runtime, threads pinned, best median of the rounds), for option-A/B shortcuts and channel counts
rounded to 1, 8 and 16, and (suffix ``L``, e.g. ``B1L``) counts chosen from a measured per-layer
latency table (``StructuredPruning(latency_table=True)``, timed at batch 32). For the eager batch-32 cell, the one that misses 1.8x, each
configuration also gets a per-layer time table: every convolution of the dense and the pruned
model timed alone on the input it sees in the model (captured by a hook), beside its MAC ratio,
and the rest of the model (BatchNorm, ReLU, shortcuts, pooling, per-op overhead) as the whole
model's time minus the convolutions'. It shows where a MAC cut does not become time. Last, one
3x3 conv is timed against its channel count at each stage's size: the shape a latency table
works with. Writes
benchmarks/results/structured_resnet20_latency.json.

    .venv/bin/python benchmarks/structured_resnet20_latency.py [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import nnshrink as ns
from nnshrink.core.modules import forward_with_hooks
from nnshrink.metrics import count_macs, measure_latency
from nnshrink.metrics.latency import forward_call, interleaved, torch_threads
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"


def conv_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The input each Conv2d of ``model`` receives on ``x`` (one eval, no-grad pass)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, inputs, output) -> None:  # returns None: the output stays as it is
            seen.setdefault(name, inputs[0])

        return hook

    handles = [m.register_forward_hook(keep(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d)]  # fmt: skip
    forward_with_hooks(model, x, handles)
    return seen


def layer_table(dense: nn.Module, pruned: nn.Module, x: torch.Tensor, args) -> dict:
    """Eager time of every conv alone (dense vs pruned) and of the rest of the model."""
    dense_in, pruned_in = conv_inputs(dense, x), conv_inputs(pruned, x)
    rows, calls = [], {}
    for name, conv in dense.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        small = pruned.get_submodule(name)
        calls[f"{name}/dense"] = forward_call(conv, dense_in[name])
        calls[f"{name}/pruned"] = forward_call(small, pruned_in[name])
        rows.append({"layer": name, "channels_in": [conv.in_channels, small.in_channels],
                     "channels_out": [conv.out_channels, small.out_channels],
                     "mac_ratio": round(count_macs(conv, dense_in[name])
                                        / count_macs(small, pruned_in[name]), 3)})  # fmt: skip
    calls["model/dense"], calls["model/pruned"] = forward_call(dense, x), forward_call(pruned, x)
    with torch_threads(args.threads):
        stats = interleaved(calls, rounds=args.rounds, runs=args.table_runs, warmup=3)
    for row in rows:
        d, p = stats[f"{row['layer']}/dense"]["median"], stats[f"{row['layer']}/pruned"]["median"]
        row.update(dense_ms=round(d, 4), pruned_ms=round(p, 4), speedup=round(d / p, 3))
    conv_d, conv_p = sum(r["dense_ms"] for r in rows), sum(r["pruned_ms"] for r in rows)
    model_d, model_p = stats["model/dense"]["median"], stats["model/pruned"]["median"]
    return {
        "batch": x.shape[0], "threads": args.threads, "convs": rows,
        "convs_total": {"dense_ms": round(conv_d, 3), "pruned_ms": round(conv_p, 3),
                        "speedup": round(conv_d / conv_p, 3)},
        "rest": {"dense_ms": round(model_d - conv_d, 3), "pruned_ms": round(model_p - conv_p, 3),
                 "speedup": round((model_d - conv_d) / max(model_p - conv_p, 1e-9), 3)},
        "model": {"dense_ms": round(model_d, 3), "pruned_ms": round(model_p, 3),
                  "speedup": round(model_d / model_p, 3)},
        "slowest_ratio_layers": [r["layer"] for r in sorted(
            rows, key=lambda r: r["speedup"] / r["mac_ratio"])[:3]],
    }  # fmt: skip


def channel_curves(args) -> dict:
    """Eager time of one 3x3 conv (c -> c channels, stride 1) against c, at each stage's size
    (batch 32, interleaved rounds): where the time is flat or falls, extra channels are free."""
    curves = {}
    for size, (lo, hi) in ((32, (8, 16)), (16, (12, 32)), (8, (24, 64))):
        calls = {}
        for c in range(lo, hi + 1):
            conv = nn.Conv2d(c, c, 3, padding=1, bias=False).eval()
            calls[str(c)] = forward_call(conv, torch.randn(32, c, size, size))
        with torch_threads(args.threads):
            stats = interleaved(calls, rounds=args.rounds, runs=args.table_runs, warmup=3)
        curves[f"{size}x{size}"] = {c: round(stats[c]["median"], 4) for c in calls}
        print(f"  {size}x{size}:", curves[f"{size}x{size}"])
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--table-runs", type=int, default=20, help="per layer and round")
    parser.add_argument("--configs", default="A1,A8,A16,B1,B8,B16,A1L,B1L,B8L",
                        help="shortcut option and round_to, e.g. A16; suffix L: latency table")  # fmt: skip
    parser.add_argument(
        "--curves",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time one 3x3 conv against its channel count at each stage size",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "structured_resnet20_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name in args.configs.split(","):
        shortcut, lut = name[0], name.endswith("L")
        round_to = int(name[1:].rstrip("L"))
        torch.manual_seed(0)
        dense = ns.models.create("resnet20", in_channels=3, input_size=32, shortcut=shortcut)
        pruned = ns.models.create("resnet20", in_channels=3, input_size=32, shortcut=shortcut)
        pruned.load_state_dict(dense.state_dict())
        x1 = torch.randn(1, 3, 32, 32)
        t0 = time.perf_counter()
        config = ns.StructuredPruning(target_macs=count_macs(dense, x1) // 2, round_to=round_to,
                                      latency_table=lut)  # fmt: skip
        # the table times layers at the batch they are deployed at (MACs are per sample)
        example = torch.randn(32, 3, 32, 32) if lut else x1
        summary = ns.compress_(pruned, config, example_inputs=example)
        row = {"widths": [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)],
               "latency_table_choices": summary.latency_table,
               "macs_before": summary.macs_before, "macs_after": summary.macs_after,
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
        row["eager_b32_layers"] = layer_table(dense.eval(), pruned.eval(),
                                              torch.randn(32, 3, 32, 32), args)  # fmt: skip
        table = row["eager_b32_layers"]
        print(f"  convs {table['convs_total']['speedup']}x, rest {table['rest']['speedup']}x, "
              f"model {table['model']['speedup']}x")  # fmt: skip
        rows[f"option-{shortcut}-round_to-{round_to}" + ("-latency-table" if lut else "")] = row
        print(shortcut, round_to, json.dumps(row))
    args.out.parent.mkdir(exist_ok=True)
    record = {"benchmark": "structured_resnet20_latency", "environment": environment(0),
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "rows": rows,
              "conv3x3_ms_by_channels_b32": channel_curves(args) if args.curves else None}  # fmt: skip
    args.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
