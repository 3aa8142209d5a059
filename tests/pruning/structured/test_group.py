"""Groups: index mappings, aggregated scores against hand computation, validated pruning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.pruning import criteria
from nnshrink.pruning.structured import build_groups


def _residual():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 4, 1)
            self.b = nn.Conv2d(4, 4, 1)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.head(self.bn(y + self.b(y)))

    return Residual()


def _main_group(model, x):
    return next(g for g in build_groups(model, x) if g.prunable)


def test_residual_group_and_mean_aggregated_scores():
    model = _residual()
    group = _main_group(model, torch.randn(1, 1, 4, 4))
    assert group.modules == ("a", "b", "bn", "head") and group.size == 4
    dims = {(e.name, e.dim): e.index.tolist() for e in group.edits}
    assert dims[("a", "out")] == dims[("b", "in")] == dims[("b", "out")] == [0, 1, 2, 3]
    expected = (criteria.l1(model.a.weight) + criteria.l1(model.b.weight)) / 2
    torch.testing.assert_close(group.scores("l1"), expected)
    torch.testing.assert_close(group.scores("bn_scale"), criteria.bn_scale(model.bn.weight))


def test_flatten_edit_maps_hw_features_to_one_channel():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 4, 2))
    group = _main_group(model, torch.randn(1, 1, 4, 4))
    fc = next(e for e in group.edits if e.name == "2")
    assert fc.index.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_prune_validates_before_editing():
    model = _residual()
    x = torch.randn(1, 1, 4, 4)
    group = _main_group(model, x)
    with pytest.raises(ValueError, match="distinct"):
        group.prune([])
    with pytest.raises(ValueError, match="out of range"):
        group.prune([0, 9])
    assert model.a.out_channels == 4
    group.prune([1, 3])
    assert model.a.out_channels == model.b.in_channels == model.bn.num_features == 2
    with pytest.raises(ValueError, match="already pruned"):
        group.prune([0])
    fixed_group = next(g for g in build_groups(model, x) if not g.prunable and g.size > 1)
    with pytest.raises(ValueError, match="fixed"):
        fixed_group.prune([0])


def test_grouped_conv_group_has_blocks():
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Conv2d(8, 4, 3, groups=2))
    group = _main_group(model, torch.randn(1, 1, 5, 5))
    assert group.blocks.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="same number"):
        group.prune([0, 1, 4])
    group.prune([0, 1, 4, 7])
    assert model[1].weight.shape == (4, 2, 3, 3)


def test_conflicting_block_structures_block_the_group():
    # GroupNorm(2) wants equal counts per half, the grouped conv per quarter: the halves would
    # allow [0, 1, 2, 3] to be kept, which leaves conv groups 2 and 3 empty. Both are the same
    # channels, so the group is left alone rather than risk an invalid layer.
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.GroupNorm(2, 8), nn.Conv2d(8, 4, 3, groups=4))
    x = torch.randn(1, 1, 5, 5)
    group = next(g for g in build_groups(model, x) if any(e.name == "1" for e in g.edits))
    assert group.blocked is not None and not group.prunable
    with pytest.raises(ValueError, match="cannot be pruned"):
        group.prune([0, 2, 4, 6])
    assert model[0].out_channels == 8
