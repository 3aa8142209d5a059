"""Low-rank factorization of your own CNN: Tucker-2 on the convolutions, truncated SVD on the Linears.

A small CNN defined here is trained for one epoch on 6,000 MNIST images (plain ``DataLoader``s).
``LowRank(method="tucker", include=("@conv",))`` replaces each convolution (except the first,
whose 1-channel input leaves nothing to factor) by a 1x1 -> kxk -> 1x1 chain with ranks chosen
to keep half its MACs; ``LowRank(method="svd", include=("@linear",))`` replaces the big Linear
by two thin ones holding 20 % of its parameters. One epoch of fine-tuning follows. Layers are
really replaced, so parameters, MACs and the file shrink. Prints params, MACs, bytes of the
``.nns`` file and test accuracy before and after. More: docs/lowrank.md.

Run: python examples/lowrank.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns


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

    tucker = ns.LowRank(method="tucker", rank="macs", macs_ratio=0.5, include=("@conv",),
                          exclude=("@first",))  # fmt: skip
    svd = ns.LowRank(method="svd", rank="params", params_ratio=0.2, include=("classifier.1",))
    for config in (tucker, svd):
        result = ns.compress_(model, config, example_inputs=x)
        for row in result.summary.rows:
            print(f"  {row.method:6} {row.name:13} ranks {row.ranks}, "
                  f"relative error {row.rel_error:.3f}")  # fmt: skip
    print(f"top-1 right after factorizing: {ns.train.evaluate(model, test)['top1']:.4f}")
    ns.train.fit(model, train, epochs=1, lr=5e-4, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    after = measure(model, x, test, out / "lowrank.nns")

    show(before, after)
    print(f"low-rank: {before['params'] / after['params']:.1f}x fewer parameters, "
          f"{before['macs'] / after['macs']:.1f}x fewer MACs")  # fmt: skip


if __name__ == "__main__":
    main()
