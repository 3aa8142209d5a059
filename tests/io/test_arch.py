"""Architecture descriptions: describe/build round trips, the class allow-list, custom registration."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from nnshrink.io import ArchitectureError, build, describe, register_module, resolve_class


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


@pytest.mark.parametrize(
    "name",
    ["os.system", "antigravity.X", "this.Y", "nnshrink.models.create", "builtins.eval",
     "torch.nn.modules.module.Module", "nnshrink.io.arch._Missing", 42],
)  # fmt: skip
def test_hostile_class_names_are_refused_without_import(name):
    before = set(sys.modules)
    with pytest.raises(ArchitectureError, match="allow-list|description is"):
        build({"class": name, "kwargs": {}})
    assert set(sys.modules) == before


def test_moved_class_names_still_resolve():
    from nnshrink.sharing.kmeans import SharedWeightLinear

    assert resolve_class("nnshrink.quantization.kmeans.SharedWeightLinear") is SharedWeightLinear
    assert resolve_class("torch.nn.Linear") is nn.Linear


@pytest.mark.parametrize(
    "desc, match",
    [
        ({"class": "torch.nn.Linear", "kwargs": {"in_features": 2, "out_features": float("nan")}},
         "non-finite"),
        ({"class": "torch.nn.Linear", "kwargs": {"in_features": object()}}, "not plain JSON"),
        ({"class": "torch.nn.Linear", "kwargs": {"**x": 1}}, "argument names"),
        ({"class": "torch.nn.Linear", "kwargs": {"in_features": -3, "out_features": 2}},
         "cannot rebuild"),
        ({"class": "torch.nn.Linear", "kwargs": {}, "code": "x"}, "unknown description keys"),
        ({"class": "torch.nn.ReLU", "kwargs": {}, "children": {"forward": {"class": "torch.nn.ReLU"}}},
         "no submodule 'forward'"),
        ({"class": "torch.nn.ModuleList", "children": {"1": {"class": "torch.nn.ReLU"}}},
         "named 0..n-1"),
        ({"class": "torch.nn.Sequential", "children": {"a.b": {"class": "torch.nn.ReLU"}}},
         "not a valid submodule name"),
        ({"class": "torch.nn.Sequential", "kwargs": {"x": 1}}, "takes no kwargs"),
        ([1, 2], "description is"),
    ],
)  # fmt: skip
def test_malformed_descriptions_are_refused(desc, match):
    with pytest.raises(ArchitectureError, match=match):
        build(desc)


def test_deep_trees_are_refused():
    desc = {"class": "torch.nn.ReLU"}
    for _ in range(100):
        desc = {"class": "torch.nn.Sequential", "children": {"0": desc}}
    with pytest.raises(ArchitectureError, match="deeper than"):
        build(desc)


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
