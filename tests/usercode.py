"""A test-only "user package": a model, data and a metric that nnshrink has never seen.

Named by reference in the tests (``tests.usercode:make_model`` etc.), as a user would name theirs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyNet(nn.Module):
    """A user's own CNN: conv-bn-relu, a residual conv block, pooling and a classifier."""

    def __init__(self, width: int = 8, num_classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(x.mean(dim=(2, 3)))


def make_model(width: int = 8, num_classes: int = 3) -> nn.Module:
    return TinyNet(width, num_classes)


def not_a_model() -> str:
    return "nope"


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 12x12 images: a bright blob top-left, centre or bottom-right."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 12, 12, generator=g)
    for cls, (r, c) in enumerate([(1, 1), (4, 4), (7, 7)]):
        x[y == cls, :, r : r + 4, c : c + 4] += 2.0
    return x, y


def make_data(batch_size: int = 32, n: int = 384):
    """``(train, test)`` plain DataLoaders, as a user writes them."""
    xtr, ytr = _blobs(n, 0)
    xte, yte = _blobs(n // 2, 1)
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=batch_size, shuffle=True)
    test = DataLoader(TensorDataset(xte, yte), batch_size=batch_size)
    return train, test


def make_data_with_val(batch_size: int = 32):
    train, test = make_data(batch_size)
    xv, yv = _blobs(96, 2)
    return train, test, DataLoader(TensorDataset(xv, yv), batch_size=batch_size)


def bad_data():
    return {"train": [1, 2, 3]}


def error_rate(model, loader):
    """A metric where lower is better (declared on the returned dict)."""
    wrong = total = 0
    for x, y in loader:
        wrong += int((model(x).argmax(1) != y).sum())
        total += len(y)
    return {"error": wrong / total, "headline": "error", "higher_is_better": False}
