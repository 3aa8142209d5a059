"""Architecture descriptions: describe/build round trips, diffs, custom registration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.io import ArchitectureError, apply_diff, build, describe, register_module, tree_diff


class _Gate(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x):
        return x * self.scale


class _Unknown(nn.Module):
    def forward(self, x):
        return x


def test_describe_build_round_trip_for_standard_layers():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, groups=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.1)),
    )
    rebuilt = build(describe(model))
    assert describe(rebuilt) == describe(model)
    rebuilt.load_state_dict(model.state_dict())


def test_custom_module_needs_registration():
    with pytest.raises(ArchitectureError, match="register_module"):
        describe(_Unknown())
    register_module(_Gate, lambda m: {"channels": m.scale.numel()})
    gate = build(describe(_Gate(5)))
    assert isinstance(gate, _Gate) and gate.scale.numel() == 5


def test_diff_lists_outermost_changes_and_applies():
    ref = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    edited = nn.Sequential(nn.Linear(4, 2), nn.Sequential(nn.Linear(2, 4), nn.ReLU()))
    edited[1][1] = nn.Sequential(nn.ReLU(), nn.Identity())
    diff = tree_diff(ref, edited)
    assert set(diff) == {"0", "1.0", "1.1"}
    rebuilt = apply_diff(ref, diff)
    assert describe(rebuilt) == describe(edited)
    assert tree_diff(ref, ref) == {}


def test_layer_kwargs_rebuild_same_shapes():
    from nnshrink.io import layer_kwargs

    for layer in (nn.Linear(5, 3, bias=False), nn.Conv2d(4, 6, (3, 1), stride=2, padding=(1, 0),
                  groups=2, padding_mode="reflect"), nn.Conv1d(2, 4, 3, padding="same")):  # fmt: skip
        again = type(layer)(**layer_kwargs(layer))
        assert {k: v.shape for k, v in again.state_dict().items()} == {
            k: v.shape for k, v in layer.state_dict().items()
        }
        assert repr(again) == repr(layer)
    with pytest.raises(ArchitectureError, match="neither Linear- nor Conv-like"):
        layer_kwargs(nn.ReLU())
