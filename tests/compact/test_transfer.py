"""CReLU / rotation blocks put into models: exact on filters that already have the structure."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnshrink.compact import CompactReplace, CReLUConv2d, RotationConv2d
from nnshrink.compact.transferred import rot90_filters
from nnshrink.core import compress_


class _Net(nn.Module):
    """conv-BN-ReLU-pool → conv-ReLU → conv-ReLU → flatten → linear (float64)."""

    def __init__(self, bias=False):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 4, 3)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x))
        return self.fc(torch.relu(self.conv3(x)).flatten(1))


def _net(bias=False, seed=0):
    torch.manual_seed(seed)
    net = _Net(bias).double().eval()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-1, 1)
        net.bn1.running_var.uniform_(0.5, 2)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(-0.5, 0.5)
    return net


def _exact_pairs_(conv, scales=None):
    """Give ``conv`` filters that are exact ± pairs (optionally scaled), in shuffled order."""
    c = conv.out_channels
    v = torch.randn(c // 2, *conv.weight.shape[1:], dtype=conv.weight.dtype)
    bank = torch.cat([v, -v])
    if scales is not None:
        bank = bank * scales.view(-1, 1, 1, 1)
    perm = torch.randperm(c)
    with torch.no_grad():
        conv.weight.copy_(bank[perm])
        if conv.bias is not None:
            b = torch.randn(c // 2, dtype=conv.weight.dtype)
            conv.bias.copy_(torch.cat([b, -b])[perm])


def _exact_rotations_(conv, scales=None):
    c = conv.out_channels
    v = torch.randn(c // 4, *conv.weight.shape[1:], dtype=conv.weight.dtype)
    bank = torch.cat([rot90_filters(v, r) for r in range(4)])
    if scales is not None:
        bank = bank * scales.view(-1, 1, 1, 1)
    perm = torch.randperm(c)
    with torch.no_grad():
        conv.weight.copy_(bank[perm])
        if conv.bias is not None:
            conv.bias.copy_(torch.randn(c // 4, dtype=conv.weight.dtype).repeat(4)[perm])


X = torch.randn(3, 2, 8, 8, dtype=torch.float64)


def test_crelu_with_batchnorm_reproduces_exact_pairs_and_moves_the_order_downstream():
    net = _net(bias=True)
    _exact_pairs_(net.conv1, scales=torch.rand(8, dtype=torch.float64) + 0.5)
    before = net(X)
    bn, conv2 = net.bn1, net.conv2
    result = compress_(net, CompactReplace(block="crelu", include=("conv1",), exclude=()),
                       example_inputs=X[:1]).summary  # fmt: skip
    assert isinstance(net.conv1, CReLUConv2d) and net.conv1.channel_order is None
    assert net.bn1 is bn and net.conv2 is conv2  # edited in place
    torch.testing.assert_close(net(X), before)  # the oracle: the original model
    rows = {r.name: r for r in result.layers}
    assert rows["conv1"].fit_cosine == pytest.approx(1.0)
    assert "moved into conv2" in rows["conv1"].notes
    assert "follow conv1" in rows["conv2"].notes and not rows["conv2"].replaced
    assert rows["conv1"].params_after == 4 * 2 * 9 + 4


def test_crelu_without_batchnorm_keeps_the_order_in_the_block_when_a_flatten_reads_it():
    net = _net(bias=True)
    _exact_pairs_(net.conv3)  # conv3 -> ReLU -> flatten -> linear: the order cannot move
    before = net(X)
    result = compress_(net, CompactReplace(block="crelu", include=("conv3",)),
                       example_inputs=X[:1]).summary  # fmt: skip
    assert isinstance(net.conv3, CReLUConv2d) and net.conv3.channel_order is not None
    torch.testing.assert_close(net(X), before)
    assert "kept in the block" in result.layers[-1].notes


def test_rotation_reproduces_an_exactly_rotated_bank_through_batchnorm_and_alone():
    net = _net(bias=True)
    _exact_rotations_(net.conv1, scales=torch.rand(8, dtype=torch.float64) + 0.5)
    _exact_rotations_(net.conv2)
    before = net(X)
    result = compress_(net, CompactReplace(block="rotation", exclude=("conv3",)),
                       example_inputs=X[:1]).summary  # fmt: skip
    assert isinstance(net.conv1, RotationConv2d) and isinstance(net.conv2, RotationConv2d)
    torch.testing.assert_close(net(X), before)
    assert [r.fit_cosine for r in result.layers[:2]] == [pytest.approx(1.0)] * 2
    assert net.conv2.weight.shape == (2, 8, 3, 3)


def test_chained_crelu_layers_fit_after_the_order_of_the_previous_one_moved_in():
    net = _net()
    _exact_pairs_(net.conv1)
    _exact_pairs_(net.conv2)  # fitted on its input channels as conv1's new order leaves them
    before = net(X)
    compress_(net, CompactReplace(block="crelu", exclude=("conv3",)), example_inputs=X[:1])
    assert isinstance(net.conv1, CReLUConv2d) and isinstance(net.conv2, CReLUConv2d)
    assert type(net.conv3) is nn.Conv2d  # kept, its input channels permuted
    torch.testing.assert_close(net(X), before)


def test_random_init_changes_no_batchnorm_and_no_reader():
    net = _net()
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("conv1")}
    compress_(net, CompactReplace(block="crelu", init="random", include=("conv1",), exclude=()),
              example_inputs=X[:1])  # fmt: skip
    assert isinstance(net.conv1, CReLUConv2d) and net.conv1.channel_order is None
    for key, value in state.items():
        assert torch.equal(net.state_dict()[key], value), key


def test_a_failure_half_way_leaves_batchnorm_readers_and_modules_bit_identical(monkeypatch):
    import nnshrink.compact.replace as replace

    net = _net()
    _exact_pairs_(net.conv1)
    modules = dict(net.named_modules())
    state = {k: v.clone() for k, v in net.state_dict().items()}

    def broken(model, name, new):
        raise RuntimeError("disk full")

    monkeypatch.setattr(replace, "set_submodule", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        compress_(net, CompactReplace(block="crelu", exclude=()), example_inputs=X[:1])
    assert dict(net.named_modules()) == modules
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("block", ["crelu", "rotation"])
def test_models_with_transferred_blocks_export_to_onnx_and_match(block):
    from nnshrink.export import export_onnx
    from nnshrink.metrics import ort_session

    model = _net().float()
    x = torch.randn(2, 2, 8, 8)
    result = compress_(model, CompactReplace(block=block, exclude=()), example_inputs=x[:1])
    assert len(result.replaced) == 3
    if block == "crelu":  # both ways of keeping the channel order are in the graph
        assert model.conv1.channel_order is None and model.conv3.channel_order is not None
    data = export_onnx(model, x[:1])
    (out,) = ort_session(data, threads=1).run(None, {"input0": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-5)
