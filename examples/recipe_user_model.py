"""A recipe run on your own model and loaders: train, prune, fine-tune, share, encode, export.

The recipe runner measures every stage (params, MACs, accuracy, bytes of the artefact that stage
wrote) and writes ``report.json``/``report.md``. Here it runs on a small CNN defined in this file
and plain ``DataLoader``s over 3,000 MNIST images, passed as ``run_recipe(..., model=...,
data=(train, test))``: the recipe names only the stages. The same stages in YAML with
``model: {factory: "mypkg.models:build"}`` run from the command line (``nnshrink run``). More:
docs/recipes.md and docs/your-model.md.

Run: python examples/recipe_user_model.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns
from nnshrink.recipes import parse_recipe, run_recipe


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


RECIPE = {
    "name": "smallcnn-prune-share",
    "seed": 0,
    "measure": {"latency": False, "threads": 1},
    "stages": [
        {"train": {"epochs": 1, "lr": 0.003, "optimizer": "adam"}},
        {"prune": {"type": "magnitude-pruning", "sparsity": 0.8}},
        {"finetune": {"epochs": 1, "lr": 0.0005}},  # keeps the pruned weights at zero
        {"share": {"type": "weight-sharing", "bits": 5}},
        {"encode": {}},  # model.nns: sparse + codebook + Huffman
    ],
}


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    train, test = mnist_loaders(3000, 1000)
    run = run_recipe(parse_recipe(RECIPE), out, model=SmallCNN(), data=(train, test),
                     progress=False, log=lambda line: None)  # fmt: skip
    print(f"{'stage':28} {'params':>9} {'nonzero':>9} {'MACs':>10} {'bytes':>9} {'top1':>7}")
    for row in run.rows:
        print(f"{row['label'][:28]:28} {row['params']:>9,} {row.get('nonzero_params', 0):>9,} "
              f"{row.get('macs') or 0:>10,} {row['size_bytes']:>9,} {row['top1']:>7.4f}")  # fmt: skip
    first, last = run.rows[0], run.rows[-1]
    print(f"recipe: {first['size_bytes'] / last['size_bytes']:.1f}x smaller on disk, report in "
          f"{out / 'report.md'}")  # fmt: skip


if __name__ == "__main__":
    main()
