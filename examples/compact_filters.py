"""Compact filters in your own CNN: each 3x3 convolution swapped for a depthwise-separable block.

A small CNN defined here is trained for one epoch on 6,000 MNIST images (plain ``DataLoader``s).
``CompactReplace(block="dwsep")`` replaces every 3x3 convolution but the first (the default
``exclude=("@first",)``) by a depthwise 3x3 + pointwise 1x1 pair (MobileNet's block), initialised
to approximate the original filters; one epoch of fine-tuning follows. The new layers are real
modules with fewer weights and MACs. Prints params, MACs, bytes of the ``.nns`` file and test
accuracy before and after. More: docs/compact.md.

Run: python examples/compact_filters.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks and a two-layer classifier, the kind of model a user writes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 7 * 7, 128),
                                        nn.ReLU(), nn.Linear(128, 10))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def mnist_loaders(n_train: int, n_test: int) -> tuple[DataLoader, DataLoader]:
    """Plain DataLoaders over a slice of MNIST (read from local files, never downloaded)."""
    train, test = ns.data.load("mnist", "train"), ns.data.load("mnist", "test")
    norm = lambda images: (images - 0.1307) / 0.3081  # noqa: E731  (MNIST mean and std)
    train_set = TensorDataset(norm(train.images[:n_train]), train.labels[:n_train])
    test_set = TensorDataset(norm(test.images[:n_test]), test.labels[:n_test])
    return DataLoader(train_set, 64, shuffle=True), DataLoader(test_set, 500)


def measure(model: nn.Module, x: torch.Tensor, test: DataLoader, path: Path) -> dict:
    """Params, MACs per sample, bytes of the ``.nns`` file written to ``path``, test top-1."""
    ns.save(model, path)
    stats = ns.profile(model, x, test, latency=False, size_bytes=path.stat().st_size)
    return {k: stats[k] for k in ("params", "nonzero_params", "macs", "size_bytes", "top1")}


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
    ns.train.fit(model, train, epochs=1, lr=3e-3, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    before = measure(model, x, test, out / "dense.nns")

    result = ns.compress_(model, ns.CompactReplace(block="dwsep"), example_inputs=x)
    print(result.to_markdown())
    print(f"top-1 right after replacing: {ns.train.evaluate(model, test)['top1']:.4f}")
    ns.train.fit(model, train, epochs=1, lr=1e-3, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    after = measure(model, x, test, out / "compact.nns")

    show(before, after)
    print(f"compact: {before['macs'] / after['macs']:.1f}x fewer MACs")


if __name__ == "__main__":
    main()
