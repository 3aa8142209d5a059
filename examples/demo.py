"""End-to-end demo on data that needs no download: Deep Compression of LeNet-300-100 on MNIST.

Trains LeNet-300-100, prunes it iteratively with retraining, shares its weights with k-means
(fine-tuning the centroids), Huffman-codes it into a real ``.nns`` file, prints the paper-style
report, and writes the file and a plot under ``runs/demo/``. Run with ``make demo``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from rich.console import Console
from rich.markdown import Markdown

import nnshrink as ns
from nnshrink.pipelines import DeepCompression, deep_compress


def plot(stages: list[dict], path: Path) -> None:
    """Accuracy and size per stage, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [s["stage"].split(" (")[0] for s in stages]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.bar(labels, [100 * s["top1"] for s in stages], color="tab:blue")
    ax1.set_ylim(min(100 * s["top1"] for s in stages) - 1, 100)
    ax1.set_ylabel("test top-1 (%)")
    ax2.bar(labels, [s["bytes"] / 1024 for s in stages], color="tab:orange")
    ax2.set_yscale("log")
    ax2.set_ylabel("size (KiB, log)")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("LeNet-300-100: Deep Compression stages")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10, help="dense training epochs")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)  # initial weights: the same run every time
    model = ns.models.create("lenet300")
    train = ns.data.loader("mnist", "train", 64, train=True, seed=args.seed)
    test = ns.data.loader("mnist", "test", 1000)
    console.print(f"[bold]1. Training LeNet-300-100 on MNIST[/bold] ({args.epochs} epochs)")
    ns.train.fit(model, train, epochs=args.epochs, lr=0.05, optimizer="sgd", weight_decay=1e-4,
                 seed=args.seed)  # fmt: skip
    ns.save_checkpoint(model, out / "lenet300.safetensors")

    console.print("[bold]2. Deep Compression[/bold]: prune (4 rounds, retraining) -> k-means "
                  "5-bit sharing (centroid fine-tuning) -> Huffman -> .nns")  # fmt: skip
    # A shorter version of benchmarks/deep_compression_lenet300.py's schedule (5 rounds, the last
    # 20 epochs: 40x within 0.1 pt); every retrain restarts a cosine schedule from the peak LR.
    config = DeepCompression(sparsity=0.935, per_layer={"5": 0.74}, prune_rounds=4,
                             retrain_epochs=2, final_epochs=6, optimizer="sgd", lr=0.05,
                             weight_decay=5e-4, fc_bits=5, share_epochs=1)  # fmt: skip
    result = deep_compress(model, train, test, out / "lenet300.nns", config, seed=args.seed,
                           log=lambda s: console.print(f"   {s}"))  # fmt: skip
    console.print(Markdown(result.to_markdown()))
    latency = {
        "dense": ns.metrics.measure_latency(model, torch.zeros(1, 1, 28, 28), threads=2).median_ms,
        "compressed": ns.metrics.measure_latency(result.model, torch.zeros(1, 1, 28, 28),
                                                 threads=2).median_ms,
    }  # fmt: skip
    plot(result.stages, out / "stages.png")
    (out / "report.json").write_text(json.dumps({**result.to_dict(), "latency_ms": latency},
                                                indent=1))  # fmt: skip
    console.print(
        f"[bold]{result.compression_ratio:.1f}x smaller on disk[/bold] "
        f"({result.file_bytes:,} bytes vs {result.dense_bytes:,} dense fp32; "
        f"{result.paper_ratio:.1f}x counted as in the paper), top-1 "
        f"{100 * result.stages[0]['top1']:.2f}% -> {100 * result.stages[-1]['top1']:.2f}%.\n"
        f"Files: {out / 'lenet300.nns'}, {out / 'stages.png'}, {out / 'report.json'}\n"
        f"Inspect: nnshrink inspect {out / 'lenet300.nns'}   "
        f"Evaluate: nnshrink eval {out / 'lenet300.nns'} --data mnist"
    )


if __name__ == "__main__":
    main()
