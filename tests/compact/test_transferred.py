import pytest
import torch
import torch.nn.functional as F

from nnshrink.compact.transferred import (
    CReLUConv2d,
    P4GroupConv2d,
    P4LiftingConv2d,
    RotationConv2d,
    p4_pool,
    rot90_filters,
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


@pytest.mark.parametrize("k", [-1, 0, 1, 2, 3, 4, 5])
def test_rot90_filters_is_torch_rot90(k):
    w = torch.randn(2, 3, 4, 4)
    assert torch.equal(rot90_filters(w, k), torch.rot90(w, k, dims=(2, 3)))


def test_ordered_crelu_is_the_concatenation_reordered():
    conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=2, dilation=2)
    layer = CReLUConv2d.from_conv(conv, ordered=True)
    order = torch.randperm(8)
    layer.channel_order.copy_(order)
    x = torch.randn(2, 3, 9, 9)
    y = F.conv2d(x, layer.weight, layer.bias, stride=2, padding=2, dilation=2)
    torch.testing.assert_close(layer(x), torch.cat([y, -y], 1)[:, order])
    assert layer(x).shape == conv(x).shape
    assert count_macs(layer, x) * 2 == count_macs(conv, x)


def test_rotation_conv_is_the_rotated_filter_bank():
    conv = torch.nn.Conv2d(3, 8, 3, stride=(1, 2), padding=(1, 2), dilation=2, bias=True)
    layer = RotationConv2d.from_conv(conv).double()
    order = torch.randperm(8)
    layer.channel_order.copy_(order)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    # the definition, with torch.rot90 as the oracle: bank entry o*4+r = filter o rotated r times
    bank = torch.stack([torch.rot90(layer.weight, r, dims=(2, 3)) for r in range(4)], dim=1)
    bank = bank.reshape(8, 3, 3, 3)[order]
    bias = layer.bias.repeat_interleave(4)[order]
    expected = F.conv2d(x, bank, bias, stride=(1, 2), padding=(1, 2), dilation=2)
    torch.testing.assert_close(layer(x), expected)
    assert layer(x).shape == conv.double()(x).shape
    assert count_params(layer) == 2 * 3 * 9 + 2
    assert layer.param_saving() == {"params": 56, "dense_params": 8 * 27 + 8, "ratio": 224 / 56}
    assert count_macs(layer, x) == count_macs(conv, x)  # every rotation is convolved
    layer(x).sum().backward()
    assert layer.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="square"):
        RotationConv2d(3, 8, (3, 1))
    with pytest.raises(ValueError, match="divisible by 4"):
        RotationConv2d(3, 6, 3)


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
    set_submodule(model, "features.0", CReLUConv2d(1, 20, 5, ordered=True))
    model.features[0].channel_order.copy_(torch.randperm(20))
    lifted = nn.Sequential(P4LiftingConv2d(20, 4, 5), P4GroupConv2d(4, 4, 1), RotationConv2d(16, 48, 1),
                           nn.Conv2d(48, 50, 1))  # fmt: skip
    set_submodule(model, "features.2", lifted)
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_p4_and_rotation_layers_export_to_onnx_with_the_fast_exporter_and_match():
    import numpy as np
    import onnx
    from torch import nn

    from nnshrink.export import export_onnx
    from nnshrink.metrics import ort_session

    class P4Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lift, self.group = P4LiftingConv2d(1, 2, 3, padding=1), P4GroupConv2d(2, 2, 3)
            self.rot = RotationConv2d(2, 4, 3, padding=1)

        def forward(self, x):
            return self.rot(p4_pool(self.group(self.lift(x))))

    model = P4Net().eval()
    x = torch.randn(2, 1, 7, 7)
    data = export_onnx(model, x[:1])
    ops = {node.op_type for node in onnx.load_from_string(data).graph.node}
    assert "Transpose" in ops and "Slice" in ops  # flips and transposes, not the dynamo path
    (out,) = ort_session(data, threads=1).run(None, {"input0": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make, channels",
    [
        (lambda: RotationConv2d(3, 8, 3, padding=1), 3),
        (lambda: P4LiftingConv2d(3, 2, 3, padding=1), 3),
        (lambda: P4GroupConv2d(2, 2, 3, padding=1), 8),
    ],
)
def test_eval_bank_cache_follows_every_weight_change(make, channels):
    """Oracle: the same layer in training mode, which rebuilds the bank on every call."""
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(2, channels, 6, 6)

    def reference():
        layer.train()
        with torch.no_grad():
            out = layer(x)
        layer.eval()
        return out

    layer.eval()
    with torch.inference_mode():
        first = layer(x)
        assert torch.equal(layer(x), first)  # served from the cache
    assert torch.equal(first, reference())
    # an optimiser step (in place), copy_/load_state_dict and a swapped .data all show at once
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).sum().backward()  # eval with grad: rebuilt, gradients flow to the learned filters
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    optimizer.step()
    with torch.no_grad():
        assert torch.equal(layer(x), reference()) and not torch.equal(layer(x), first)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in layer.state_dict().items()}  # fmt: skip
    layer.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(layer(x), reference())
    layer.weight.data = torch.randn_like(layer.weight)
    with torch.no_grad():
        assert torch.equal(layer(x), reference())
