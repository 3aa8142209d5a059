"""Weight sharing on your own CNN: k-means codebooks, fine-tuned, stored as indices in a ``.nns``.

A small CNN defined here is trained for one epoch on 6,000 MNIST images (plain ``DataLoader``s).
``WeightSharing`` clusters every layer's weights into a codebook (Han et al.'s widths: 8 bits,
256 shared values, for convolutions; 5 bits, 32 values, for fully connected layers), the shared
values are fine-tuned for one epoch (``finetune_shared``: gradients summed per centroid),
``ns.finalize`` turns the layers back into plain ``Conv2d``/``Linear`` holding only the shared
values, and ``ns.save`` writes a ``.nns`` file that stores each weight as a codebook index
(Huffman-coded). Prints params, MACs, bytes of the file and test accuracy before and after. More:
docs/weight-sharing.md.

Run: python examples/weight_sharing.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns
from nnshrink.sharing import finetune_shared


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU blocks and a two-layer classifier, the kind of model a user writes."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
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

    config = ns.WeightSharing(per_layer={"@conv": 8, "@linear": 5})
    result = ns.compress_(model, config)
    for row in result.summary:
        print(f"  {row.name:14} {row.bits} bits, {row.clusters_used:3} shared values used")
    print(f"top-1 right after sharing: {ns.train.evaluate(model, test)['top1']:.4f}")
    finetune_shared(model, train, epochs=1)
    ns.finalize(model)  # plain layers again, each holding at most 2**bits distinct values
    after = measure(model, x, test, out / "shared.nns")

    show(before, after)
    print(f"weight-sharing: .nns file {before['size_bytes'] / after['size_bytes']:.1f}x smaller")


if __name__ == "__main__":
    main()
