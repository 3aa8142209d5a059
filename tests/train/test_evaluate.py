"""evaluate(): top-1/top-5/loss against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.data import TensorLoader
from nnshrink.train import evaluate


class _Fixed(nn.Module):
    """Returns stored logits for each sample index given as input."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, idx):
        return self.logits[idx.view(-1).long()]


def test_topk_and_loss_match_hand_computation():
    logits = torch.randn(12, 7)
    labels = torch.randint(0, 7, (12,))
    idx = torch.arange(12, dtype=torch.float32).view(12, 1, 1, 1)
    result = evaluate(_Fixed(logits), TensorLoader(idx, labels, 5))
    top1 = (logits.argmax(1) == labels).float().mean().item()
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    loss = nn.functional.cross_entropy(logits, labels).item()
    assert result["samples"] == 12
    assert result["top1"] == pytest.approx(top1)
    assert result["top5"] == pytest.approx(top5)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)


def test_empty_loader_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        evaluate(nn.Identity(), [])
