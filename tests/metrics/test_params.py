"""Parameter counts, dense and non-zero."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune

from nnshrink.metrics import count_nonzero_params, count_params


def test_counts_shared_parameters_once():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, lin)
    assert count_params(model) == 12


def test_nonzero_counts_zeros_and_prune_masks():
    lin = nn.Linear(10, 10)
    with torch.no_grad():
        lin.weight[:5] = 0
    assert count_nonzero_params(lin) == 50 + int((lin.bias != 0).sum())
    lin2 = nn.Linear(10, 10)
    prune.l1_unstructured(lin2, "weight", amount=0.3)
    assert count_nonzero_params(lin2) == 70 + int((lin2.bias != 0).sum())


def test_trainable_only():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 8
