"""Ternary and binary weights on your own CNN: 2-bit and 1-bit layers, bit-packed in a ``.nns``.

A small CNN defined here is trained for one epoch on 6,000 MNIST images (plain ``DataLoader``s).
A copy gets ``Ternary(mode="ttq")`` (trained ternary quantization: weights in {-Wn, 0, +Wp}, two
learned scales per layer), another ``BinaryWeights()`` (BinaryConnect: sign of a latent float
weight); the first and last layers stay float, as in the papers. Each is fine-tuned for one epoch
(``LatentClip`` keeps the latent binary weights in [-1, 1]), ``pack_low_bit`` reports the packed
bytes of the low-bit layers, ``ns.finalize`` gives the deploy form, and ``ns.save`` writes a
``.nns`` file with the ternary/binary encodings. Prints params, MACs, bytes of the file and test
accuracy before and after. More: docs/binary-ternary.md.

Run: python examples/binary_ternary.py
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns
from nnshrink.binary import BinaryWeights, LatentClip, Ternary, pack_low_bit


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

    for name, config in (("ternary", Ternary(mode="ttq")), ("binary", BinaryWeights())):
        low = copy.deepcopy(model)  # both start from the same trained float model
        result = ns.compress_(low, config)
        callbacks = [LatentClip()] if name == "binary" else []
        ns.train.fit(low, train, epochs=1, lr=5e-4, optimizer="adam", weight_decay=0.0,
                     callbacks=callbacks, progress=False)  # fmt: skip
        packed = pack_low_bit(low)
        print(f"{result.technique}: {len(packed)} low-bit layers, "
              f"{sum(p.nbytes for p in packed.values()):,} packed bytes")  # fmt: skip
        ns.finalize(low)
        show(before, measure(low, x, test, out / f"{name}.nns"))


if __name__ == "__main__":
    main()
