"""The zoo ViT: shapes, parameter and MAC counts against a direct count."""

from __future__ import annotations

import torch

from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create


def test_default_vit_size_and_macs():
    model = create("vit")
    dim, depth, hidden, tokens = 128, 6, 256, 17
    block = 4 * dim * dim + 4 * dim + 2 * dim * hidden + hidden + dim + 4 * dim  # + 2 LayerNorms
    embed = 49 * dim + dim + dim + tokens * dim
    assert count_params(model) == depth * block + embed + 2 * dim + dim * 10 + 10
    per_block = tokens * (4 * dim * dim + 2 * dim * hidden) + 2 * tokens * tokens * dim
    macs = depth * per_block + 16 * 49 * dim + dim * 10
    assert count_macs(model, torch.zeros(1, 1, 28, 28)) == macs


def test_vit_runs_and_trains():
    model = create("vit", depth=2, dim=32, num_heads=2, patch_size=4, in_channels=3, input_size=32)
    x = torch.randn(3, 3, 32, 32)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    assert model(x).shape == (3, 10) and model.pos_embed.grad is not None
