"""Channel-flow rules for individual ops: labels follow, merge, or are fixed as they must."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnshrink.pruning.structured import DependencyGraph, StructuredPruner, build_groups
from nnshrink.pruning.structured.rules import axis_groups

from .helpers import check_equivalent


def _out_fixed(model, name, x):
    """Whether every output channel of module ``name`` is fixed."""
    graph = DependencyGraph(model, x)
    edit = next(e for e in graph.edits if e.name == name and e.dim == "out")
    return all(graph.is_fixed(label) for label in edit.labels)


class Body(nn.Module):
    """conv → (op under test) → conv → mean → linear."""

    def __init__(self, op, mid_in=8):
        super().__init__()
        self.op = op
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(mid_in, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv2(self.op(x, self.conv(x))).mean((2, 3)))


X = torch.randn(2, 1, 6, 6)


def test_channels_last_layer_norm_via_permute():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.ln = nn.LayerNorm(8)
            self.conv2 = nn.Conv2d(8, 4, 3, padding=1)

        def forward(self, x):
            y = self.ln(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.conv2(y).flatten(1)

    model = Model()
    StructuredPruner(model, X).prune()
    assert model.conv.out_channels == model.ln.normalized_shape[0] == model.conv2.in_channels == 4
    assert model(X).shape == (2, 4 * 36)


def test_concat_with_the_model_input_keeps_input_channels():
    model = Body(lambda x, y: torch.cat([x, y], dim=1), mid_in=9)
    check_equivalent(model, X)
    assert model.conv.out_channels == 4 and model.conv2.in_channels == 5


def test_channel_padding_adds_fixed_channels():
    model = Body(lambda x, y: F.pad(y, (0, 0, 0, 0, 1, 2)), mid_in=11)
    check_equivalent(model, X)
    # 11 channels (3 padded, fixed): keep round(5.5) = 6 = 3 padded + 3 real
    assert model.conv.out_channels == 3 and model.conv2.in_channels == 6


def test_literal_channel_slice_and_channel_reductions_fix_channels():
    assert _out_fixed(Body(lambda x, y: y[:, :4], mid_in=4), "conv", X)
    assert _out_fixed(Body(lambda x, y: y - y.mean(1, keepdim=True)), "conv", X)
    assert _out_fixed(Body(lambda x, y: torch.softmax(y, dim=1)), "conv", X)
    assert _out_fixed(Body(lambda x, y: y + torch.ones(1, 8, 1, 1)), "conv", X)  # constant
    # spatial ops keep channels prunable
    assert not _out_fixed(Body(lambda x, y: y[:, :, 1:, ::2].softmax(-1)), "conv", X)
    assert not _out_fixed(Body(lambda x, y: y + torch.ones(1, 1, 6, 6)), "conv", X)


def test_transpose_and_keepdim_mean_follow_channels():
    def op(x, y):
        g = y.mean((2, 3), keepdim=True)  # (N, C, 1, 1)
        return (y * g).transpose(2, 3)

    model = Body(op)
    check_equivalent(model, X)
    assert model.conv.out_channels == model.conv2.in_channels == 4


def test_add_of_two_branches_is_one_group():
    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 6, 3, padding=1)
            self.b = nn.Conv2d(1, 6, 1)
            self.out = nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.out(torch.relu(self.a(x)) + self.b(x))

    model = TwoBranch()
    groups = [g for g in build_groups(model, X) if g.prunable]
    assert len(groups) == 1 and set(groups[0].modules) == {"a", "b", "out"}
    check_equivalent(model, X)
    assert model.a.out_channels == model.b.out_channels == model.out.in_channels == 3


def test_axis_groups_pairs_reshaped_axes():
    assert axis_groups([2, 3, 4, 5], [2, 60]) == [([0], [0]), ([1, 2, 3], [1])]
    assert axis_groups([2, 8], [2, 8, 1, 1]) == [([0], [0]), ([1], [1, 2, 3])]
    assert axis_groups([6], [4]) is None
