"""Structured pruning of your own CNN: whole channels removed, the model physically smaller.

A small conv-BN-ReLU network defined here is trained for one epoch on 6,000 MNIST images (plain
``DataLoader``s), ``StructuredPruning(sparsity=0.5)`` removes half the channels of every coupled
group (conv, its BatchNorm and the next layer's inputs shrink together, found by tracing the
model), and one epoch of fine-tuning recovers accuracy. Unlike unstructured pruning the layers
really have fewer channels, so parameters, MACs and the checkpoint all shrink with no sparse
format. Prints params, MACs, checkpoint bytes and test accuracy before and after. More:
docs/structured-pruning.md.

Run: python examples/prune_structured.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks, global pooling and a linear head."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU())  # fmt: skip

        self.features = nn.Sequential(block(1, width), nn.MaxPool2d(2), block(width, 2 * width),
                                      nn.MaxPool2d(2), block(2 * width, 4 * width))  # fmt: skip
        self.head = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def mnist_loaders(n_train: int, n_test: int) -> tuple[DataLoader, DataLoader]:
    """Plain DataLoaders over a slice of MNIST (read from local files, never downloaded)."""
    train, test = ns.data.load("mnist", "train"), ns.data.load("mnist", "test")
    norm = lambda images: (images - 0.1307) / 0.3081  # noqa: E731  (MNIST mean and std)
    train_set = TensorDataset(norm(train.images[:n_train]), train.labels[:n_train])
    test_set = TensorDataset(norm(test.images[:n_test]), test.labels[:n_test])
    return DataLoader(train_set, 64, shuffle=True), DataLoader(test_set, 500)


def measure(model: nn.Module, x: torch.Tensor, test: DataLoader, path: Path) -> dict:
    """Params, MACs per sample, bytes of the safetensors checkpoint, test top-1."""
    ns.save_checkpoint(model, path)
    stats = ns.profile(model, x, test, latency=False, size_bytes=path.stat().st_size)
    return {k: stats[k] for k in ("params", "macs", "size_bytes", "top1")}


def show(before: dict, after: dict) -> None:
    """One line per measurement: before -> after."""
    for key in before:
        fmt = ".4f" if isinstance(before[key], float) else ","
        print(f"{key:15} {before[key]:>12{fmt}} -> {after[key]:>12{fmt}}")


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    train, test = mnist_loaders(6000, 2000)
    x = next(iter(test))[0][:1]
    model = SmallCNN()
    ns.train.fit(model, train, epochs=1, lr=1e-2, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    before = measure(model, x, test, out / "dense.safetensors")

    config = ns.StructuredPruning(sparsity=0.5, criterion="l2")
    result = ns.compress_(model, config, example_inputs=x)
    for row in result.summary.groups:
        print(f"  {', '.join(row.modules)}: {row.channels_before} -> {row.channels_after} channels")
    ns.train.fit(
        model, train, epochs=1, lr=5e-3, optimizer="adam", weight_decay=0.0, progress=False
    )  # fmt: skip  (a fresh optimizer: the parameters are new tensors)
    after = measure(model, x, test, out / "pruned.safetensors")

    show(before, after)
    print(f"structured-pruning: {before['macs'] / after['macs']:.1f}x fewer MACs, "
          f"{before['params'] / after['params']:.1f}x fewer parameters")  # fmt: skip


if __name__ == "__main__":
    main()
