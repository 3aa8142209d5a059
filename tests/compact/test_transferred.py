import pytest
import torch
import torch.nn.functional as F

from nnshrink.compact.transferred import (
    CReLUConv2d,
    P4GroupConv2d,
    P4LiftingConv2d,
    p4_pool,
    rotate_p4,
)
from nnshrink.metrics import count_macs, count_params


def _integer_weights_(module):
    # integer-valued float64 weights and inputs make every sum exact, so equalities are exact
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randint(-3, 4, p.shape, dtype=torch.float64))
    return module


def _int_input(*shape):
    return torch.randint(-3, 4, shape, dtype=torch.float64)


def test_crelu_outputs_the_conv_and_its_negation():
    layer = CReLUConv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    y = layer(x)
    expected = F.conv2d(x, layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(y[:, :4], expected)
    torch.testing.assert_close(y[:, 4:], -expected)


def test_crelu_params_macs_and_saving():
    layer = CReLUConv2d(3, 8, 3, padding=1)
    assert count_params(layer) == 4 * 3 * 9 + 4
    assert layer.param_saving() == {"params": 112, "dense_params": 8 * 27 + 8, "ratio": 2.0}
    # only the 4 learned maps are convolved: 6*6 positions * 4 maps * 27 taps
    assert count_macs(layer, torch.zeros(1, 3, 6, 6)) == 36 * 4 * 27


def test_crelu_is_trainable_and_validates():
    layer = CReLUConv2d(2, 4, 3)
    layer(torch.randn(1, 2, 5, 5)).relu().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="even"):
        CReLUConv2d(2, 5, 3)


def test_lifting_params_and_saving():
    layer = P4LiftingConv2d(3, 8, 3, padding=1)
    assert count_params(layer) == 8 * 3 * 9 + 8
    assert layer.param_saving()["dense_params"] == 32 * 3 * 9 + 32
    assert layer.param_saving()["ratio"] == 4.0
    assert count_macs(layer, torch.zeros(1, 3, 5, 5)) == 25 * 32 * 27


def test_lifting_filter_bank_holds_the_four_rotations():
    layer = P4LiftingConv2d(2, 3, 3)
    bank = layer.filter_bank().view(3, 4, 2, 3, 3)
    for r in range(4):
        assert torch.equal(bank[:, r], torch.rot90(layer.weight, r, dims=(2, 3)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_lifting_is_exactly_rotation_equivariant(k):
    torch.manual_seed(3)
    layer = _integer_weights_(P4LiftingConv2d(2, 3, 3, padding=1).double())
    x = _int_input(2, 2, 7, 9)
    rotated_then_lifted = layer(torch.rot90(x, k, dims=(2, 3)))
    lifted_then_rotated = rotate_p4(layer(x), k)
    assert torch.equal(rotated_then_lifted, lifted_then_rotated)
    # spelled out: spatial rotation and a cyclic shift r -> r + k of the rotation axis
    y = layer(x).view(2, 3, 4, 7, 9)
    y_rot = rotated_then_lifted.view(2, 3, 4, *rotated_then_lifted.shape[-2:])
    for r in range(4):
        assert torch.equal(y_rot[:, :, (r + k) % 4], torch.rot90(y[:, :, r], k, dims=(2, 3)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_group_conv_is_exactly_rotation_equivariant(k):
    torch.manual_seed(4)
    lift = _integer_weights_(P4LiftingConv2d(1, 2, 3, padding=1).double())
    group = _integer_weights_(P4GroupConv2d(2, 3, 3, padding=1).double())
    x = _int_input(1, 1, 8, 6)
    net = lambda t: group(lift(t))  # noqa: E731
    assert torch.equal(net(torch.rot90(x, k, dims=(2, 3))), rotate_p4(net(x), k))
    pooled = p4_pool(net(x))
    assert torch.equal(p4_pool(net(torch.rot90(x, k, dims=(2, 3)))), torch.rot90(pooled, k, (2, 3)))


def test_group_conv_params_and_trainable():
    layer = P4GroupConv2d(4, 6, 3, padding=1)
    assert count_params(layer) == 6 * 4 * 4 * 9 + 6
    assert layer.param_saving()["ratio"] == pytest.approx((4 * 6 * 16 * 9 + 24) / (6 * 16 * 9 + 6))
    x = torch.randn(2, 16, 5, 5)
    assert count_macs(layer, x) == 2 * 25 * 24 * 16 * 9
    layer(x).sum().backward()
    assert layer.weight.grad is not None
    with pytest.raises(ValueError, match="input channels"):
        layer(torch.randn(1, 4, 5, 5))


def test_transferred_layers_survive_a_checkpoint_round_trip(tmp_path):
    from torch import nn

    from nnshrink.core import set_submodule
    from nnshrink.io import load_checkpoint, save_checkpoint
    from nnshrink.models import create

    model = create("lenet5")
    set_submodule(model, "features.0", CReLUConv2d(1, 20, 5))
    lifted = nn.Sequential(P4LiftingConv2d(20, 4, 5), P4GroupConv2d(4, 4, 1), nn.Conv2d(16, 50, 1))
    set_submodule(model, "features.2", lifted)
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))
