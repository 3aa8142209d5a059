"""Heads + MLP pruning of the zoo ViT on Fashion-MNIST at 2x fewer MACs: nnshrink vs Torch-Pruning.

Issue 21, benchmark 7. One dense ``create("vit")`` (patch 7, width 128, 6 blocks of 4 heads,
MLP ratio 2) is trained on Fashion-MNIST, then pruned by each tool to at most half its MACs and
fine-tuned with the same budget, distilled from the dense model (KD, T=4):

* **nnshrink**: ``StructuredPruning(head_sparsity=0.5, sparsity=s, round_to=8)``: half the
  heads of every block and MLP neurons; the hidden width (residual stream) is kept, as by
  default. ``s`` is the smallest MLP sparsity (bisection) that reaches half the MACs.
* **torch-pruning** 1.6.1, configured as its ``examples/transformers/prune_timm_vit.py`` does:
  ``BasePruner`` with ``GroupMagnitudeImportance(p=2)``, ``num_heads={attn.qkv: heads}``,
  ``prune_num_heads=True``, ``prune_head_dims=False``, ``head_pruning_ratio=0.5``, the
  classifier ignored, then ``num_heads`` / ``head_dim`` patched by hand. Its ``pruning_ratio``
  (which also prunes the hidden width) is found by bisection for half the MACs; ``round_to=8``
  as for nnshrink (the example uses 1; multiples of 8 are what ONNX Runtime wants).

MACs are nnshrink's per-sample count (the zoo attention counts its two matrix products too).
Latency: dense and both pruned models timed in interleaved rounds in one process, eager PyTorch
and ONNX Runtime, batch 1 and 32, with pinned threads; best median of the rounds, and the range.
Wrap the latency stage in ``flock /tmp/nnshrink-timing.lock`` on a shared machine.

Stages (the CPU protocol is scaled down, see ``--epochs``; each stage writes the JSON):
    python benchmarks/vit_fashion_pruning.py --stage dense
    python benchmarks/vit_fashion_pruning.py --stage prune
    flock /tmp/nnshrink-timing.lock python benchmarks/vit_fashion_pruning.py --stage latency
Writes benchmarks/results/vit_fashion_pruning.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import nnshrink as ns
from nnshrink import data
from nnshrink.distill import distill
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import count_macs, count_params, measure_latency
from nnshrink.models.vit import Attention
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "vit_fashion_pruning.json"
X1 = torch.zeros(1, 1, 28, 28)


def bisect(prune, model: nn.Module, target: int, lo: float = 0.0, hi: float = 0.9, tries: int = 12):
    """Smallest ratio whose pruned copy has <= ``target`` MACs; returns (ratio, pruned copy)."""
    best = None
    for _ in range(tries):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        prune(trial, mid)
        if count_macs(trial, X1) <= target:
            best, hi = (mid, trial), mid
        else:
            lo = mid
    if best is None:
        trial = copy.deepcopy(model)
        prune(trial, hi)
        best = (hi, trial)
    return best


def prune_nnshrink(model: nn.Module, ratio: float) -> None:
    config = ns.StructuredPruning(sparsity=ratio, head_sparsity=0.5, criterion="l2", round_to=8,
                                  exclude=("head",))  # fmt: skip
    ns.compress_(model, config, example_inputs=X1)


def prune_torch_pruning(model: nn.Module, ratio: float) -> None:
    import torch_pruning as tp

    num_heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
    pruner = tp.pruner.BasePruner(
        model, X1, global_pruning=False, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[model.head], num_heads=num_heads,
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5, round_to=8,
    )  # fmt: skip
    for group in pruner.step(interactive=True):
        group.prune()
    for m in model.modules():  # what the example patches by hand
        if isinstance(m, Attention):
            m.num_heads = pruner.num_heads[m.qkv]
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)


def describe(model: nn.Module) -> dict:
    blocks = [b for b in model.blocks]
    return {
        "params": count_params(model),
        "macs": count_macs(model, X1),
        "hidden": model.patch_embed.out_channels,
        "heads": [b.attn.num_heads for b in blocks],
        "head_dim": [b.attn.head_dim for b in blocks],
        "mlp": [b.fc1.out_features for b in blocks],
    }


def loaders(args):
    train = data.loader("fashion-mnist", "train", 128, train=True, seed=args.seed,
                        limit=args.limit or None)  # fmt: skip
    test = data.loader("fashion-mnist", "test", 500, limit=args.test_limit or None)
    return train, test


def stage_dense(args, record: dict) -> None:
    train, test = loaders(args)
    torch.manual_seed(args.seed)
    model = ns.models.create("vit")
    t0 = time.time()
    fit(model, train, epochs=args.epochs, lr=args.lr, optimizer="adamw", weight_decay=0.05,
        schedule="cosine", seed=args.seed, progress=False)  # fmt: skip
    top1 = evaluate(model, test)["top1"]
    save_checkpoint(model, Path(args.work) / "dense.nns")
    record["dense"] = {**describe(model), "top1": top1, "train_seconds": round(time.time() - t0)}
    print("dense", record["dense"], flush=True)


def stage_prune(args, record: dict) -> None:
    train, test = loaders(args)
    work = Path(args.work)
    dense, _ = load_checkpoint(work / "dense.nns")
    dense.eval()
    target = count_macs(dense, X1) // 2
    record["target_macs"] = target
    for tool, prune in (("nnshrink", prune_nnshrink), ("torch-pruning", prune_torch_pruning)):
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ratio, pruned = bisect(prune, dense, target)
        search = time.time() - t0
        t0 = time.time()
        prune(copy.deepcopy(dense), ratio)  # one prune at the final ratio, timed alone
        row = {**describe(pruned), "ratio": round(ratio, 4), "prune_seconds": round(time.time() - t0, 3),
               "bisection_seconds": round(search, 1), "top1_before_finetune": evaluate(pruned, test)["top1"]}  # fmt: skip
        t0 = time.time()
        distill(dense, pruned, train, method="kd", epochs=args.finetune_epochs, lr=args.lr / 2,
                optimizer="adamw", weight_decay=0.05, schedule="cosine", seed=args.seed,
                progress=False)  # fmt: skip
        row["top1"] = evaluate(pruned, test)["top1"]
        row["finetune_seconds"] = round(time.time() - t0)
        row["macs_ratio"] = round(record["dense"]["macs"] / row["macs"], 3)
        save_pruned(tool, pruned, ratio, work)
        record[tool] = row
        print(tool, row, flush=True)
    drop = record["dense"]["top1"] - record["nnshrink"]["top1"]  # top-1 is a fraction
    record["goal_accuracy_within_1pt"] = drop <= 0.01
    record["goal_accuracy_ge_torch_pruning"] = (
        record["nnshrink"]["top1"] >= record["torch-pruning"]["top1"]
    )


def save_pruned(tool: str, model: nn.Module, ratio: float, work: Path) -> None:
    """No pickles: nnshrink's model as a checkpoint (its edits are recorded); Torch-Pruning's
    also shrinks root parameters (cls_token, pos_embed) that checkpoints do not describe, so
    its weights go to a safetensors state dict and the structure is rebuilt by pruning the
    dense model again at the same (deterministic) ratio."""
    if tool == "nnshrink":
        save_checkpoint(model, work / "nnshrink.safetensors")
        return
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(work / f"{tool}.safetensors"), metadata={"ratio": repr(ratio)})


def load_pruned(tool: str, work: Path) -> nn.Module | None:
    path = work / f"{tool}.safetensors"
    if not path.exists():
        return None
    if tool == "nnshrink":
        return load_checkpoint(path)[0]
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as fh:
        ratio = float(fh.metadata()["ratio"])
    model, _ = load_checkpoint(work / "dense.nns")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prune_torch_pruning(model.eval(), ratio)
    model.load_state_dict(load_file(str(path)))
    return model


def stage_latency(args, record: dict) -> None:
    work = Path(args.work)
    dense, _ = load_checkpoint(work / "dense.nns")
    models = {"dense": dense.eval()}
    for tool in ("nnshrink", "torch-pruning"):
        pruned = load_pruned(tool, work)
        if pruned is not None:
            models[tool] = pruned.eval()
    timings = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        for runtime in ("eager", "onnxruntime"):
            for batch in (1, 32):
                xb = torch.randn(batch, 1, 28, 28)
                medians = {name: [] for name in models}
                for _ in range(args.rounds):
                    for name, model in models.items():
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            stats = measure_latency(model, xb, runtime=runtime, threads=threads,
                                                    runs=args.runs)  # fmt: skip
                        medians[name].append(stats.median_ms)
                key = f"{runtime}_b{batch}_t{threads}"
                row = {f"{n}_ms": round(min(v), 4) for n, v in medians.items()}
                row.update({f"{n}_ms_range": [round(min(v), 4), round(max(v), 4)]
                            for n, v in medians.items()})  # fmt: skip
                for name in models:
                    if name != "dense":
                        row[f"{name}_speedup"] = round(
                            min(medians["dense"]) / min(medians[name]), 3
                        )
                        # per round: dense and pruned timed back to back
                        per_round = [d / p for d, p in zip(medians["dense"], medians[name])]
                        row[f"{name}_speedup_range"] = [round(min(per_round), 3),
                                                        round(max(per_round), 3)]  # fmt: skip
                timings[key] = row
                print(key, row, flush=True)
    record["latency"] = timings
    record["latency_environment"] = environment(args.seed)
    b32 = [v.get("nnshrink_speedup") for k, v in timings.items() if "_b32_" in k]
    record["goal_speedup_1_7x_b32"] = bool(b32) and min(x for x in b32 if x) >= 1.7


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["dense", "prune", "latency", "all"], default="all")
    p.add_argument("--work", default="runs/vit_fashion", help="checkpoints go here")
    p.add_argument("--epochs", type=int, default=10, help="dense epochs (scaled down for CPU)")
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak LR; fine-tune uses lr/2")
    p.add_argument("--limit", type=int, default=0, help="first N training images (0 = all)")
    p.add_argument("--test-limit", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--train-threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.train_threads)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    record["benchmark"] = "vit_fashion_pruning"
    record["protocol"] = (
        "zoo ViT (patch 7, dim 128, 6 blocks x 4 heads, MLP ratio 2) trained on Fashion-MNIST "
        f"with AdamW (lr {args.lr}, wd 0.05, cosine, batch 128) for {args.epochs} epochs on CPU "
        "(scaled down from the usual 100+ ViT epochs); each tool prunes to <= half the MACs "
        f"(bisection on its ratio), then KD from the dense model (T=4) for "
        f"{args.finetune_epochs} epochs at lr/2; test top-1 on the 10k test set"
    )
    record.setdefault("args", {})[args.stage] = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
    }
    record["environment"] = environment(args.seed)
    stages = ["dense", "prune", "latency"] if args.stage == "all" else [args.stage]
    for stage in stages:
        {"dense": stage_dense, "prune": stage_prune, "latency": stage_latency}[stage](args, record)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
