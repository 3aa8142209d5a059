"""Unstructured pruning of your own CNN: magnitude pruning, then fine-tuning that keeps the zeros.

A small convolutional network defined here is trained for one epoch on 6,000 MNIST images (plain
``DataLoader``s over ``ns.data.load`` tensors), 80 % of its weights are removed by magnitude
(``MagnitudePruning(sparsity=0.8)``; the classifier layer is left dense), one epoch of
fine-tuning with ``KeepZeros`` keeps the removed weights at zero, ``ns.finalize`` makes the masks
plain zeros, and the model is written as a ``.nns`` file whose sparse encoding stores only the
survivors. Prints parameters, non-zero parameters, MACs, bytes on disk and test accuracy before
and after. More: docs/pruning.md.

Run: python examples/prune_unstructured.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns
from nnshrink.train import KeepZeros


class SmallCNN(nn.Module):
    """Two conv blocks and a two-layer classifier, the kind of model a user writes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def mnist_loaders(n_train: int, n_test: int) -> tuple[DataLoader, DataLoader]:
    """Plain DataLoaders over a slice of MNIST (read from local files, never downloaded)."""
    train, test = ns.data.load("mnist", "train"), ns.data.load("mnist", "test")
    norm = lambda images: (images - 0.1307) / 0.3081  # noqa: E731  (MNIST mean and std)
    train_set = TensorDataset(norm(train.images[:n_train]), train.labels[:n_train])
    test_set = TensorDataset(norm(test.images[:n_test]), test.labels[:n_test])
    return DataLoader(train_set, 64, shuffle=True), DataLoader(test_set, 500)


def measure(model: nn.Module, x: torch.Tensor, test: DataLoader, path: Path) -> dict:
    """Params, non-zero params, MACs per sample, bytes of the ``.nns`` file, test top-1."""
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
    ns.train.fit(model, train, epochs=1, lr=2e-3, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    before = measure(model, x, test, out / "dense.nns")

    result = ns.compress_(model, ns.MagnitudePruning(sparsity=0.8, exclude=("@last",)))
    print(f"{result.technique}: sparsity {result.summary.sparsity:.2f}, non-zero params "
          f"{result.before['nonzero_params']:,} -> {result.after['nonzero_params']:,}")  # fmt: skip
    pruned_top1 = ns.train.evaluate(model, test)["top1"]
    ns.train.fit(model, train, epochs=1, lr=5e-4, optimizer="adam", weight_decay=0.0,
                 callbacks=[KeepZeros()], progress=False)  # fmt: skip
    ns.finalize(model)  # masks become plain zeros: what the sparse encoding stores
    after = measure(model, x, test, out / "pruned.nns")

    print(f"top-1 right after pruning (before fine-tuning): {pruned_top1:.4f}")
    show(before, after)
    ratio = before["size_bytes"] / after["size_bytes"]
    print(
        f"pruned .nns file {after['size_bytes']:,} bytes: {ratio:.1f}x smaller than the dense one"
    )


if __name__ == "__main__":
    main()
