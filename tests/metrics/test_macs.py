"""MAC counting against hand-computed values and torch's FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nnshrink.metrics import (
    count_macs,
    count_macs_per_sample,
    first_sample,
    profile_macs,
    register_mac_counter,
)
from nnshrink.models import create


def test_lenet300_hand_value():
    # 784*300 + 300*100 + 100*10
    assert count_macs(create("lenet300"), torch.zeros(1, 1, 28, 28)) == 266_200


def test_lenet5_hand_value():
    # conv1: 24*24*20*25, conv2: 8*8*50*(20*25), fc1: 800*500, fc2: 500*10
    expected = 24 * 24 * 20 * 25 + 8 * 8 * 50 * 500 + 800 * 500 + 500 * 10
    assert count_macs(create("lenet5"), torch.zeros(1, 1, 28, 28)) == expected == 2_293_000


def test_grouped_and_depthwise_conv():
    x = torch.zeros(1, 8, 10, 10)
    grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(grouped, x) == 10 * 10 * 16 * (8 // 4) * 9
    assert count_macs(depthwise, x) == 10 * 10 * 8 * 1 * 9


def test_batch_multiplies():
    model = create("lenet300")
    assert count_macs(model, torch.zeros(4, 1, 28, 28)) == 4 * 266_200


def _flop_counter_macs(model, x):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize(
    ("name", "shape"),
    [("lenet5", (1, 1, 28, 28)), ("vgg16", (1, 3, 32, 32)), ("resnet20", (2, 3, 32, 32)),
     ("mobilenetv2", (1, 3, 32, 32)), ("lenet300", (3, 1, 28, 28))],
)  # fmt: skip
def test_agrees_with_flop_counter_mode(name, shape):
    model = create(name, in_channels=shape[1], input_size=shape[2]).eval()
    x = torch.randn(*shape)
    assert count_macs(model, x) == _flop_counter_macs(model, x)


def test_rows_have_names_shapes_and_reused_module_twice():
    lin = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(self.lin(x))

    rows = profile_macs(Twice(), torch.zeros(2, 4))
    assert [(r.name, r.macs, r.output_shape) for r in rows] == [("lin", 32, (2, 4))] * 2


def test_custom_module_macs_method_and_registered_counter():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(3, 5))

        def forward(self, x):
            return torch.nn.functional.linear(x, self.weight)

        def macs(self, inputs, output):
            return output.numel() * 5

    class Registered(nn.Module):
        def forward(self, x):
            return x * 2

    register_mac_counter(Registered)(lambda m, i, o: o.numel())
    model = nn.Sequential(Functional(), Registered())
    assert count_macs(model, torch.zeros(2, 5)) == 2 * 3 * 5 + 2 * 3


def test_mode_restored():
    model = create("lenet5").train()
    count_macs(model, torch.zeros(1, 1, 28, 28))
    assert model.training


def test_per_sample_count_is_the_batch_count_divided_by_the_batch():
    model = create("lenet5")
    x = torch.randn(6, 1, 28, 28)
    assert count_macs_per_sample(model, x) * 6 == count_macs(model, x)
    assert count_macs_per_sample(model, x) == count_macs(model, x[:1])


def test_first_sample_cuts_every_tensor_and_keeps_the_structure():
    inputs = (torch.zeros(4, 3), [torch.ones(4, 2)], {"m": torch.ones(4)}, torch.tensor(2.0), 7)
    cut = first_sample(inputs)
    assert isinstance(cut, tuple) and isinstance(cut[1], list) and isinstance(cut[2], dict)
    assert cut[0].shape == (1, 3) and cut[1][0].shape == (1, 2) and cut[2]["m"].shape == (1,)
    assert cut[3].ndim == 0 and cut[4] == 7
