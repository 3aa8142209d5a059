"""Structured pruning to half the MACs: nnshrink vs Torch-Pruning 1.6.1, side by side in one run.

Issue #3, benchmark 2. One dense ResNet (Fashion-MNIST, option-B shortcuts so that both tools
see only standard layers) is pruned by each tool with the same criterion (L2 norm of the coupled
group) to at most half its MACs, then each pruned copy is fine-tuned with the same budget (same
epochs, LR, batches). Reported per tool: MACs, params, test top-1 after fine-tuning, the time to
build the dependency graph and prune, and CPU latency at batch 1 and 32 with pinned threads in
eager PyTorch and ONNX Runtime (dense and both pruned models timed in interleaved rounds in the
same process; best median of the rounds).

Torch-Pruning has no MAC target, so its ratio is found by bisection (each try rebuilds its graph
on a fresh copy); its reported prune time is that of one build + prune at the final ratio, and
the bisection's total is reported separately. Torch-Pruning is a bench-only extra
(``pip install torch-pruning==1.6.1``).

``--tools nnshrink-depth,...`` adds nnshrink with depth pruning: residual blocks removed first
(``BlockPruning``, ranked on a training batch), then channels if the target is not reached yet.
``--init CKPT`` starts from a dense checkpoint trained elsewhere.

Stages (so the GPU part and the CPU timing can run apart):
    python benchmarks/structured_vs_torch_pruning.py --device cuda --work W --stage train-prune
    python benchmarks/structured_vs_torch_pruning.py --work W --stage latency --threads 2
(``--stage all`` does both; ``--stage dense`` only trains and saves the dense model.) Writes benchmarks/results/structured_vs_torch_pruning.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

import nnshrink as ns
from nnshrink import data
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.metrics import count_macs, count_params, measure_latency
from nnshrink.pruning import BlockPruning
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "structured_vs_torch_pruning.json"
TOOLS = ("nnshrink", "nnshrink-depth", "torch-pruning")


def prune_nnshrink(
    model: nn.Module, x: torch.Tensor, target: int, round_to: int, global_ranking: bool = False
) -> dict:
    t0 = time.perf_counter()
    config = ns.StructuredPruning(criterion="l2", target_macs=target, round_to=round_to,
                                  global_ranking=global_ranking)  # fmt: skip
    summary = ns.compress_(model, config, example_inputs=x)
    return {"prune_seconds": round(time.perf_counter() - t0, 3), "steps": summary.steps}


def prune_nnshrink_depth(
    model: nn.Module, x: torch.Tensor, batch: torch.Tensor, target: int, depth_share: float
) -> dict:
    """Residual blocks first (``BlockPruning``, ranked on a training batch), then channels.

    ``depth_share`` of the MAC cut comes from removing blocks (1.0: blocks only, when they
    reach the target); channel pruning (``StructuredPruning(target_macs)``) does the rest.
    """
    t0 = time.perf_counter()
    dense = count_macs(model, x)
    per_sample = dense - depth_share * (dense - target)
    # the batch ranks the blocks; target_macs is per sample
    blocks = ns.compress_(model, BlockPruning(target_macs=int(per_sample)),
                          example_inputs=batch)  # fmt: skip
    info = {"blocks_removed": blocks.removed, "macs_after_blocks": count_macs(model, x)}
    if count_macs(model, x) > target:
        summary = ns.compress_(model, ns.StructuredPruning(criterion="l2", target_macs=target),
                               example_inputs=x)  # fmt: skip
        info["channel_steps"] = summary.steps
    info["prune_seconds"] = round(time.perf_counter() - t0, 3)
    return info


def _tp_prune(model: nn.Module, x: torch.Tensor, ratio: float, round_to: int) -> float:
    try:
        import torch_pruning as tp
    except ImportError:
        raise SystemExit(
            "this benchmark compares with Torch-Pruning, a bench-only extra: "
            "pip install torch-pruning==1.6.1"
        ) from None

    t0 = time.perf_counter()
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=[model.fc], round_to=round_to if round_to > 1 else None,
    )  # fmt: skip
    pruner.step()
    return time.perf_counter() - t0


def prune_torch_pruning(model: nn.Module, x: torch.Tensor, target: int, round_to: int):
    """Bisect Torch-Pruning's uniform ratio for the largest model with MACs <= ``target``."""
    t_search = time.perf_counter()
    lo, hi, best = 0.0, 0.9, None
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        seconds = _tp_prune(trial, x, mid, round_to)
        if count_macs(trial, x) <= target:
            hi, best = mid, (trial, mid, seconds)
        else:
            lo = mid
    if best is None:
        return None, {"error": f"no uniform ratio <= {hi} reached {target:,} MACs "
                               f"with round_to={round_to}"}  # fmt: skip
    trial, ratio, seconds = best
    info = {"prune_seconds": round(seconds, 3), "ratio": round(ratio, 4),
            "search_seconds": round(time.perf_counter() - t_search, 2)}  # fmt: skip
    return trial, info


def train_and_prune(args, record: dict) -> None:
    device = torch.device(args.device)
    train = data.loader("fashion-mnist", "train", 128, train=True, limit=args.limit or None)
    test = data.loader("fashion-mnist", "test", 1000, limit=args.test_limit or None)
    train, test = train.to(device), test.to(device)
    x = torch.zeros(1, 1, 28, 28)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dense_path = work / "dense.safetensors"
    if args.init is not None and not dense_path.exists():
        dense_path.write_bytes(Path(args.init).read_bytes())
    if dense_path.exists():
        dense, _ = load_checkpoint(dense_path)
    else:
        torch.manual_seed(args.seed)
        dense = ns.models.create(args.model, in_channels=1, shortcut="B").to(device)
        t0 = time.perf_counter()
        fit(dense, train, epochs=args.epochs, lr=args.lr, progress=False, seed=args.seed)
        record["dense_train_seconds"] = round(time.perf_counter() - t0, 1)
        save_checkpoint(dense.cpu(), dense_path)
    dense = dense.cpu().eval()
    macs = count_macs(dense, x)
    if args.stage == "dense":
        return
    record["dense"] = {"macs": macs, "params": count_params(dense), "epochs": args.epochs,
                       "top1": evaluate(dense.to(device), test)["top1"]}  # fmt: skip
    dense.cpu()
    print("dense", record["dense"], flush=True)
    tools = args.tools.split(",")
    record["tools"] = tools
    batch = next(iter(data.loader("fashion-mnist", "train", 256, train=True, seed=args.seed)))[0]
    for tool in tools:
        model = copy.deepcopy(dense)
        if tool == "nnshrink":
            info = prune_nnshrink(model, x, macs // 2, args.round_to, args.global_ranking)
        elif tool == "nnshrink-depth":
            info = prune_nnshrink_depth(model, x, batch, macs // 2, args.depth_share)
        else:
            model, info = prune_torch_pruning(model, x, macs // 2, args.round_to)
            if model is None:
                record[tool] = info
                print(tool, info, flush=True)
                continue
        info.update(macs=count_macs(model, x), params=count_params(model))
        info["top1_no_finetune"] = evaluate(model.to(device), test)["top1"]
        t0 = time.perf_counter()
        fit(model, train, epochs=args.finetune_epochs, lr=args.lr / 10, progress=False,
            seed=args.seed)  # fmt: skip
        info["finetune_seconds"] = round(time.perf_counter() - t0, 1)
        info["top1"] = evaluate(model.eval(), test)["top1"]
        save_checkpoint(model.cpu(), work / f"{tool}.safetensors")  # no pickles: spec + weights
        record[tool] = info
        print(tool, info, flush=True)


def latency(args, record: dict) -> None:
    work = Path(args.work)
    dense, _ = load_checkpoint(work / "dense.safetensors")
    models = {"dense": dense.eval()}
    tools = [t for t in record.get("tools", TOOLS)
             if (work / f"{t}.safetensors").exists() and "error" not in record.get(t, {})]  # fmt: skip
    for tool in tools:
        models[tool] = load_checkpoint(work / f"{tool}.safetensors")[0].eval()
    timings = {}
    for runtime in ("eager", "onnxruntime"):
        for batch in (1, 32):
            xb = torch.randn(batch, 1, 28, 28)
            best = {name: float("inf") for name in models}
            for _ in range(args.rounds):
                for name, model in models.items():
                    stats = measure_latency(model, xb, runtime=runtime, threads=args.threads,
                                            runs=args.runs)  # fmt: skip
                    best[name] = min(best[name], stats.median_ms)
            key = f"{runtime}_b{batch}"
            timings[key] = {f"{name}_ms": round(ms, 4) for name, ms in best.items()}
            for tool in tools:
                timings[key][f"{tool}_speedup"] = round(best["dense"] / best[tool], 3)
            print(key, timings[key], flush=True)
    record["latency"] = timings
    record["latency_environment"] = environment(args.seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["all", "dense", "train-prune", "latency"], default="all")
    p.add_argument("--work", default="runs/structured_vs_tp", help="dense/pruned models go here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet56", choices=["resnet20", "resnet32", "resnet56"])
    p.add_argument("--epochs", type=int, default=20, help="dense training epochs")
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1, help="dense peak LR; fine-tune uses lr/10")
    p.add_argument("--round-to", type=int, default=1)
    p.add_argument(
        "--global-ranking",
        action="store_true",
        help="nnshrink: rank channels across layers (lands closer to the MAC target "
        "when --round-to makes the steps coarse)",
    )
    p.add_argument("--tools", default="nnshrink,torch-pruning",
                   help=f"comma list from {','.join(TOOLS)}")  # fmt: skip
    p.add_argument("--depth-share", type=float, default=1.0,
                   help="nnshrink-depth: share of the MAC cut taken by removing blocks")  # fmt: skip
    p.add_argument("--init", type=Path, default=None,
                   help="dense checkpoint to start from (copied to WORK/dense.safetensors)")  # fmt: skip
    p.add_argument("--limit", type=int, default=0, help="first N training images (0 = all)")
    p.add_argument("--test-limit", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    record = json.loads(args.out.read_text()) if args.stage == "latency" else {}
    record.setdefault("benchmark", "structured_vs_torch_pruning")
    record.setdefault(
        "args", {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    )
    if args.stage in ("all", "dense", "train-prune"):
        record["environment"] = environment(args.seed)
        if args.device.startswith("cuda"):
            record["environment"]["device_name"] = torch.cuda.get_device_name(0)
        train_and_prune(args, record)
    if args.stage in ("all", "latency"):
        latency(args, record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
