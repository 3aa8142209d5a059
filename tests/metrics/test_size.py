"""Size in bytes."""

from __future__ import annotations

import torch
from torch import nn

from nnshrink.metrics import dense_bytes, file_bytes, state_bytes
from nnshrink.models import create


def test_dense_bytes_lenet300():
    assert dense_bytes(create("lenet300")) == 266_610 * 4
    assert dense_bytes(create("lenet300"), bytes_per_value=2) == 266_610 * 2


def test_state_bytes_includes_buffers():
    bn = nn.BatchNorm1d(4)
    # weight, bias, running_mean, running_var (fp32) + num_batches_tracked (int64)
    assert state_bytes(bn) == 4 * 4 * 4 + 8


def test_file_bytes(tmp_path):
    path = tmp_path / "x.pt"
    torch.save(torch.zeros(10), path)
    assert file_bytes(path) == path.stat().st_size > 40
