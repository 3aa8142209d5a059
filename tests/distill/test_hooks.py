import pytest
import torch
from torch import nn

from nnshrink.distill.hooks import FeatureCapture


def _hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_captures_named_layers_and_removes_hooks(tiny_convnet):
    x = torch.randn(2, 1, 8, 8)
    with FeatureCapture(tiny_convnet, ["conv1", "bn2", "fc"]) as cap:
        assert _hook_count(tiny_convnet) == 3
        out = tiny_convnet(x)
    assert _hook_count(tiny_convnet) == 0
    assert cap["conv1"].shape == (2, 8, 8, 8)
    assert cap["bn2"].shape == (2, 16, 8, 8)
    torch.testing.assert_close(cap["fc"], out)
    assert cap["fc"].requires_grad


def test_hooks_removed_when_the_block_raises(tiny_convnet):
    with pytest.raises(RuntimeError):
        with FeatureCapture(tiny_convnet, ["conv2"]):
            tiny_convnet(torch.randn(1, 3, 8, 8))  # wrong channel count
    assert _hook_count(tiny_convnet) == 0


def test_unknown_name_suggests_close_matches(tiny_convnet):
    with pytest.raises(KeyError, match="conv1"):
        FeatureCapture(tiny_convnet, ["conv_1"])


def test_detach_and_clone_guard_against_in_place_ops():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True))
    x = torch.tensor([[1.0, -2.0, 3.0]])
    with FeatureCapture(net, ["0"], clone=True, detach=True) as cap:
        pre = net[0](x).detach()
        net(x)
    torch.testing.assert_close(cap["0"], pre)  # not overwritten by the in-place ReLU
    assert not cap["0"].requires_grad
    with pytest.raises(KeyError, match="has not run"):
        cap["1"]
