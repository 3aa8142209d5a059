"""End-to-end demo on data that needs no download: train LeNet-5 on MNIST and measure it.

Run with ``make demo`` (or ``.venv/bin/python examples/demo.py``). Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

import nnshrink as ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="runs/demo")
    args = parser.parse_args()
    torch.set_num_threads(2)
    console = Console()
    out = Path(args.out)

    model = ns.models.create("lenet5")
    train = ns.data.loader("mnist", "train", 64, train=True)
    test = ns.data.loader("mnist", "test", 1000)
    console.print(f"[bold]Training LeNet-5 on MNIST[/bold] for {args.epochs} epochs (Adam, cosine)")
    history = ns.train.fit(
        model, train, epochs=args.epochs, lr=2e-3, optimizer="adam", weight_decay=0.0,
        val_loader=test,
    )  # fmt: skip
    for epoch in history.epochs:
        console.print(
            f"  epoch {epoch['epoch']}: train loss {epoch['train_loss']:.4f}, "
            f"test top-1 {100 * epoch['val_top1']:.2f}% ({epoch['seconds']:.1f} s)"
        )
    stats = ns.metrics.snapshot(model, torch.zeros(1, 1, 28, 28), test)
    path = ns.io.save_checkpoint(model, out / "lenet5.safetensors", metrics=stats)
    stats["file_bytes"] = ns.metrics.file_bytes(path)

    table = Table(title="LeNet-5 (Caffe variant) profile")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("test top-1", f"{100 * stats['top1']:.2f}%")
    table.add_row("test top-5", f"{100 * stats['top5']:.2f}%")
    table.add_row("parameters", f"{stats['params']:,}")
    table.add_row("MACs / sample (FLOPs = 2 x MACs)", f"{stats['macs']:,}")
    table.add_row("dense fp32 size (bytes)", f"{stats['size_bytes']:,}")
    table.add_row("checkpoint file (bytes)", f"{stats['file_bytes']:,}")
    table.add_row("latency eager, batch 1, 2 threads (ms)", f"{stats['latency_ms']:.3f}")
    table.add_row(
        "latency ONNX Runtime, batch 1, 2 threads (ms)", f"{stats['latency_onnx_ms']:.3f}"
    )
    console.print(table)
    console.print(f"checkpoint: {path}")


if __name__ == "__main__":
    main()
