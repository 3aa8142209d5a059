import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnshrink.compact.blocks import (
    ChannelShuffle,
    DepthwiseSeparableConv,
    FactorizedConv,
    FireConv,
    ShuffleConv,
)
from nnshrink.metrics import count_macs, count_params

GEOMETRIES = [
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=0),
    dict(kernel_size=5, stride=2, padding=2),
    dict(kernel_size=3, stride=1, padding=3, dilation=2),
    dict(kernel_size=(3, 5), stride=(1, 2), padding=(1, 2)),
    dict(kernel_size=3, stride=1, padding=2, bias=False),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize(
    "make",
    [
        DepthwiseSeparableConv.from_conv,
        lambda c: DepthwiseSeparableConv.from_conv(c, bn_relu=False),
        FireConv.from_conv,
        ShuffleConv.from_conv,
        FactorizedConv.from_conv,
    ],
)
def test_blocks_are_drop_in_replacements(geometry, make):
    conv = nn.Conv2d(8, 12, **geometry)
    x = torch.randn(2, 8, 11, 13)
    block = make(conv).eval()
    assert block(x).shape == conv(x).shape


def test_depthwise_separable_macs_and_params_by_hand():
    block = DepthwiseSeparableConv(32, 64, 3, padding=1)
    x = torch.zeros(1, 32, 8, 8)
    # depthwise: 8*8 positions * 32 channels * 9 taps; pointwise: 8*8 * 64 * 32
    assert count_macs(block, x) == 8 * 8 * 32 * 9 + 8 * 8 * 64 * 32
    # dw weights (no bias, BN follows) + BN (2*32) + pw weights + pw bias
    assert count_params(block) == 32 * 9 + 2 * 32 + 64 * 32 + 64


def test_fire_macs_and_params_by_hand():
    block = FireConv(64, 128, 3, padding=1, squeeze_ratio=0.25)
    assert block.squeeze.out_channels == 32
    assert (block.expand1x1.out_channels, block.expand3x3.out_channels) == (64, 64)
    x = torch.zeros(1, 64, 8, 8)
    macs = 64 * 64 * 32 + 64 * 32 * 64 + 64 * 32 * 64 * 9  # squeeze, expand1x1, expand3x3
    assert count_macs(block, x) == macs
    assert count_params(block) == (64 * 32 + 32) + (32 * 64 + 64) + (32 * 64 * 9 + 64)


def test_shuffle_and_factorized_macs_by_hand():
    x = torch.zeros(1, 64, 8, 8)
    assert count_macs(ShuffleConv(64, 64, 3, padding=1, groups=4), x) == 64 * 64 * 16 * 9
    x = torch.zeros(1, 16, 8, 8)
    # k x 1 then 1 x k, 16 mid channels each, 3 taps each
    assert count_macs(FactorizedConv(16, 16, 3, padding=1), x) == 2 * 64 * 16 * 16 * 3


def test_linear_depthwise_separable_equals_the_composed_dense_conv():
    torch.manual_seed(1)
    block = DepthwiseSeparableConv(4, 6, 3, stride=2, padding=1, bn_relu=False).double()
    nn.init.zeros_(block.depthwise.bias)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    # dense weight W[o, i] = pw[o, i] * dw[i]
    dense = block.pointwise.weight[:, :, 0, 0, None, None] * block.depthwise.weight[:, 0][None]
    expected = F.conv2d(x, dense, block.pointwise.bias, stride=2, padding=1)
    torch.testing.assert_close(block(x), expected)


def test_linear_factorized_equals_the_rank_structured_dense_conv():
    torch.manual_seed(2)
    block = FactorizedConv(3, 5, 3, padding=1, mid_channels=4, bn_relu=False).double()
    nn.init.zeros_(block.vertical.bias)
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    v = block.vertical.weight[:, :, :, 0]  # (mid, in, kh)
    h = block.horizontal.weight[:, :, 0, :]  # (out, mid, kw)
    dense = torch.einsum("mih,omw->oihw", v, h)
    expected = F.conv2d(x, dense, block.horizontal.bias, padding=1)
    torch.testing.assert_close(block(x), expected)


def test_channel_shuffle_permutation():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_shuffle_conv_is_grouped_conv_then_shuffle():
    block = ShuffleConv(4, 6, 3, padding=1, groups=2)
    x = torch.randn(1, 4, 5, 5)
    y = block.conv(x)
    torch.testing.assert_close(block(x), y[:, [0, 3, 1, 4, 2, 5]])


def test_fire_crops_the_1x1_branch_for_valid_convs():
    block = FireConv(4, 8, 5, padding=0)
    assert block.crop == (2, 2)
    assert block(torch.randn(1, 4, 9, 9)).shape == (1, 8, 5, 5)


def test_bad_block_arguments_raise():
    with pytest.raises(ValueError, match="divisible by groups"):
        ShuffleConv(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="odd kernel"):
        FireConv(4, 8, 2)
    with pytest.raises(ValueError, match="padding"):
        DepthwiseSeparableConv.from_conv(nn.Conv2d(4, 4, 3, padding="same"))


def test_init_kwargs_rebuild_an_equal_block():
    for block in (
        DepthwiseSeparableConv(4, 8, (3, 5), stride=2, padding=(1, 2)),
        FireConv(4, 8, 3, padding=1, squeeze_ratio=0.5),
        ShuffleConv(4, 8, 3, groups=2),
        FactorizedConv(4, 8, 3, padding=1, mid_channels=2),
    ):
        clone = type(block)(**block.init_kwargs)
        assert [p.shape for p in clone.parameters()] == [p.shape for p in block.parameters()]
        clone.load_state_dict(block.state_dict())
        x = torch.randn(2, 4, 9, 9)
        torch.testing.assert_close(clone.eval()(x), block.eval()(x))
