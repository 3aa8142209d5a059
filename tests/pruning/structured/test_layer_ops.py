"""Per-layer slicers against the dense layer: kept outputs equal, removed inputs add nothing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnshrink.models.resnet import ZeroPadShortcut
from nnshrink.pruning.structured import (
    ops_for,
    prune_in_channels,
    prune_out_channels,
    register_layer_ops,
    supported_types,
)


def test_conv_out_channels_equal_dense_outputs_and_carry_grads():
    conv = nn.Conv2d(3, 8, 3)
    conv(torch.randn(1, 3, 5, 5)).sum().backward()
    dense, x, keep = copy.deepcopy(conv), torch.randn(2, 3, 6, 6), [1, 4, 6]
    grad = conv.weight.grad.clone()
    prune_out_channels(conv, keep)
    assert conv.out_channels == 3 and conv.weight.shape == (3, 3, 3, 3)
    torch.testing.assert_close(conv(x), dense(x)[:, keep])
    torch.testing.assert_close(conv.weight.grad, grad[keep])


def test_conv_in_channels_equal_dense_with_removed_inputs_zeroed():
    conv, x, keep = nn.Conv2d(6, 4, 3), torch.randn(2, 6, 6, 6), [0, 2, 5]
    dense = copy.deepcopy(conv)
    prune_in_channels(conv, keep)
    zeroed = torch.zeros_like(x)
    zeroed[:, keep] = x[:, keep]
    torch.testing.assert_close(conv(x[:, keep]), dense(zeroed))


def test_grouped_conv_in_channels_keep_group_structure():
    conv, x = nn.Conv2d(8, 6, 3, groups=2), torch.randn(2, 8, 5, 5)
    dense, keep = copy.deepcopy(conv), [1, 3, 4, 7]  # two per group of four
    prune_in_channels(conv, keep)
    assert conv.groups == 2 and conv.in_channels == 4 and conv.weight.shape == (6, 2, 3, 3)
    zeroed = torch.zeros_like(x)
    zeroed[:, keep] = x[:, keep]
    torch.testing.assert_close(conv(x[:, keep]), dense(zeroed))
    with pytest.raises(ValueError, match="same non-zero number"):
        prune_in_channels(nn.Conv2d(8, 6, 3, groups=2), [0, 1, 2])


def test_depthwise_conv_shrinks_groups():
    conv, x, keep = nn.Conv2d(6, 6, 3, groups=6), torch.randn(1, 6, 5, 5), [0, 3, 4]
    dense = copy.deepcopy(conv)
    prune_out_channels(conv, keep)
    assert conv.groups == conv.in_channels == conv.out_channels == 3
    torch.testing.assert_close(conv(x[:, keep]), dense(x)[:, keep])


def test_conv_transpose_and_linear():
    deconv, x = nn.ConvTranspose2d(4, 6, 2, stride=2), torch.randn(1, 4, 3, 3)
    dense = copy.deepcopy(deconv)
    prune_out_channels(deconv, [0, 5])
    torch.testing.assert_close(deconv(x), dense(x)[:, [0, 5]])
    lin, v = nn.Linear(5, 7), torch.randn(3, 5)
    dense = copy.deepcopy(lin)
    prune_out_channels(lin, [6, 2])  # any order: kept ascending
    prune_in_channels(lin, [0, 4])
    assert (lin.in_features, lin.out_features) == (2, 2)
    zeroed = v.clone()
    zeroed[:, 1:4] = 0
    torch.testing.assert_close(lin(v[:, [0, 4]]), dense(zeroed)[:, [2, 6]])


def test_batch_norm_slices_params_and_running_stats():
    bn = nn.BatchNorm2d(5).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    dense, x = copy.deepcopy(bn), torch.randn(2, 5, 3, 3)
    prune_out_channels(bn, [1, 2])
    assert bn.num_features == 2 and bn.running_var.shape == (2,)
    assert "running_mean" in bn.state_dict()
    torch.testing.assert_close(bn(x[:, [1, 2]]), dense(x)[:, [1, 2]])


def test_group_norm_requires_equal_count_per_group():
    gn = nn.GroupNorm(2, 8)
    with pytest.raises(ValueError, match="same non-zero number"):
        prune_out_channels(gn, [0, 1, 2, 4])
    prune_out_channels(gn, [0, 3, 4, 7])
    assert gn.num_channels == 4 and gn.weight.shape == (4,)


def test_layer_norm_and_prelu():
    ln = nn.LayerNorm(6)
    prune_out_channels(ln, [0, 1, 5])
    assert ln.normalized_shape == (3,) and ln(torch.randn(2, 3)).shape == (2, 3)
    prelu = nn.PReLU(4)
    prune_out_channels(prelu, [2])
    assert prelu.num_parameters == 1 and prelu.weight.shape == (1,)


def test_zero_pad_shortcut_matches_dense_on_kept_channels():
    pad, x = ZeroPadShortcut(4, 8, 2), torch.randn(1, 4, 6, 6)
    dense_out = pad(x)
    prune_out_channels(pad, [1, 3, 5, 6])  # two passthrough, two padded
    assert (pad.in_channels, pad.out_channels) == (2, 4)
    torch.testing.assert_close(pad(x[:, [1, 3]]), dense_out[:, [1, 3, 5, 6]])
    pad2 = ZeroPadShortcut(4, 8, 1)
    prune_in_channels(pad2, [0, 2])
    assert (pad2.in_channels, pad2.out_channels) == (2, 6)


def test_bad_indices_and_unknown_types_are_rejected():
    with pytest.raises(ValueError, match="keep at least one"):
        prune_out_channels(nn.Linear(2, 3), [])
    with pytest.raises(ValueError, match="distinct"):
        prune_out_channels(nn.Linear(2, 3), [0, 0])
    with pytest.raises(TypeError, match="no slicer for GRUCell"):
        prune_out_channels(nn.GRUCell(2, 3), [0])


def test_user_registered_layer_is_sliced_and_traced():
    class Scale(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.s = nn.Parameter(torch.rand(c) + 0.5)

        def forward(self, x):
            return x * self.s[:, None, None]

    def cut(m, keep):
        m.s = nn.Parameter(m.s.data[keep])

    register_layer_ops(Scale, cut)
    assert "Scale" in supported_types() and ops_for(Scale(2)).coupling == "shared"
    from nnshrink.pruning.structured import StructuredPruner

    model = nn.Sequential(nn.Conv2d(1, 6, 3), Scale(6), nn.ReLU(), nn.Conv2d(6, 2, 3))
    StructuredPruner(model, torch.randn(1, 1, 8, 8)).step(0.5)
    assert model[1].s.shape == (3,) and model[3].in_channels == 3
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 2, 4, 4)
