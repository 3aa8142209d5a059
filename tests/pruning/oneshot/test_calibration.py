"""Calibration batches in every accepted form; passes that stop at a layer; forward order."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nnshrink.pruning.oneshot import calibration_batches, forward_order, run_batches
from nnshrink.pruning.oneshot.layers import input_rows, unsupported_reason


def test_batch_forms():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    assert [len(args) for args, _ in calibration_batches(a)] == [1]
    assert calibration_batches((a, b)) == [((a, b), {})]  # one batch of two positional inputs
    got = calibration_batches([a, (a, b), {"input_ids": b}])
    assert [(len(args), sorted(kw)) for args, kw in got] == [(1, []), (2, []), (0, ["input_ids"])]
    loader = DataLoader(TensorDataset(torch.randn(10, 3), torch.zeros(10)), batch_size=4)
    batches = calibration_batches(loader)
    assert [args[0].shape[0] for args, _ in batches] == [4, 4, 2]  # the x of each (x, y)
    assert len(calibration_batches(loader, limit=2)) == 2
    assert len(calibration_batches([a] * 5, limit=3)) == 3
    with pytest.raises(ValueError, match="calibration data"):
        calibration_batches(None, kind="wanda")
    with pytest.raises(TypeError, match="tensor, a tuple"):
        calibration_batches([3.0])


def test_run_batches_stops_at_the_layer_and_removes_hooks():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    after = []
    model[2].register_forward_hook(lambda m, i, o: after.append(1))
    seen = []
    x = torch.randn(5, 3)
    run_batches(model, calibration_batches([x, x]), {model[2]: seen.append}, stop_at=model[2])
    assert len(seen) == 2 and after == []  # layer 2 itself never ran
    torch.testing.assert_close(seen[0], torch.relu(model[0](x)))
    assert not model[2]._forward_pre_hooks
    model.train()
    run_batches(model, calibration_batches(x), {model[0]: seen.append})
    assert after == [1] and model.training  # the whole model ran, in eval mode, mode restored


def test_forward_order_follows_calls_not_definition():
    class Swapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late, self.early, self.unused = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.late(self.early(x))

    m = Swapped()
    assert forward_order(m, ((torch.ones(1, 2),), {}), [m.late, m.early, m.unused]) == [
        m.early,
        m.late,
    ]


def test_input_rows_match_the_layer_computation():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, dilation=1, bias=False)
    x = torch.randn(2, 3, 7, 7)
    rows = input_rows(conv, x)
    y = (rows @ conv.weight.reshape(5, -1).T).reshape(2, -1, 5).transpose(1, 2)
    torch.testing.assert_close(y.reshape(conv(x).shape), conv(x), rtol=1e-5, atol=1e-5)
    assert input_rows(nn.Linear(4, 2), torch.zeros(2, 3, 4)).shape == (6, 4)
    assert "padding_mode" in unsupported_reason(
        nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    )
    assert unsupported_reason(nn.Linear(2, 2)) is None
