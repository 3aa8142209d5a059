"""Knowledge distillation between your own models: a wide teacher trains a 4x narrower student.

A teacher CNN defined here (width 32) is trained for one epoch on 6,000 MNIST images (plain
``DataLoader``s). A student of the same class at width 8 is trained twice for one epoch: once
alone on the labels, once through ``Distiller(teacher, student, "kd")`` (Hinton et al.'s soft
targets, here at temperature 2 and weight 0.5, plus the label loss); ``ns.train.fit(distiller,
..., criterion=distiller.criterion)`` trains the student and leaves the teacher frozen. Prints
params, MACs, bytes of the ``.nns`` file and test accuracy of the teacher and both students. With
a one-epoch teacher and one epoch of student training the two students land within about a point
of each other (either way round, depending on the seed); the gain of distillation needs a better
teacher and longer schedules. More: docs/distillation.md.

Run: python examples/distill.py
"""

from __future__ import annotations

import copy
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
    teacher = SmallCNN(width=32)
    ns.train.fit(teacher, train, epochs=1, lr=2e-3, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    before = measure(teacher, x, test, out / "teacher.nns")

    torch.manual_seed(1)
    alone = SmallCNN(width=8)
    student = copy.deepcopy(alone)  # the same initial weights for both students
    ns.train.fit(alone, train, epochs=1, lr=3e-3, optimizer="adam", weight_decay=0.0,
                 progress=False)  # fmt: skip
    distiller = ns.Distiller(teacher, student, "kd", temperature=2.0, alpha=0.5)
    ns.train.fit(distiller, train, epochs=1, lr=3e-3, optimizer="adam", weight_decay=0.0,
                 criterion=distiller.criterion, progress=False)  # fmt: skip
    after = measure(student, x, test, out / "student.nns")

    print("teacher -> distilled student")
    show(before, after)
    print(f"student trained alone: top1 {ns.train.evaluate(alone, test)['top1']:.4f}")
    print(f"distill: student has {before['params'] / after['params']:.1f}x fewer parameters")


if __name__ == "__main__":
    main()
