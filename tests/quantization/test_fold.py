import torch
from torch import nn

from nnshrink.models import create
from nnshrink.quantization.fold import (
    find_conv_bn_pairs,
    fold_batchnorm,
    fold_bn_params,
    fuse_conv_bn,
)


def _randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))


def test_fold_bn_params_matches_float64_reference():
    conv = nn.Conv2d(3, 5, 3, bias=True).double()
    bn = nn.BatchNorm2d(5).double().eval()
    _randomize_bn(bn)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    w, b = fold_bn_params(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.eps
    )
    ref = bn(conv(x))
    out = torch.nn.functional.conv2d(x, w, b)
    assert torch.allclose(out, ref, atol=1e-10)


def test_fuse_conv_without_bias_and_linear():
    for layer, bn, x in [
        (nn.Conv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), torch.randn(3, 2, 6, 6)),
        (nn.Linear(6, 4), nn.BatchNorm1d(4), torch.randn(3, 6)),
    ]:
        bn.eval()
        _randomize_bn(bn)
        fused = fuse_conv_bn(layer, bn)
        assert torch.allclose(fused(x), bn(layer(x)), atol=1e-5)
        assert fused.bias is not None


def test_fold_batchnorm_on_traced_model(tiny_convnet):
    model = tiny_convnet.eval()
    _randomize_bn(model)
    x = torch.randn(4, 1, 28, 28)
    ref = model(x)
    pairs = fold_batchnorm(model)
    assert [(p.layer, p.bn) for p in pairs] == [("conv1", "bn1"), ("conv2", "bn2")]
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.bn2, nn.Identity)
    assert torch.allclose(model(x), ref, atol=1e-5)


def test_fold_batchnorm_resnet20_with_custom_leaf_shortcut():
    model = create("resnet20", in_channels=3).eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    pairs = fold_batchnorm(model)
    assert len(pairs) == 19  # every conv of ResNet-20 (option A) is followed by its BN
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(model(x), ref, atol=1e-4, rtol=1e-4)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU())

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            return self.body(x)
        return self.body(-x)


def test_fold_batchnorm_falls_back_to_sequential_pairs():
    model = _Untraceable().eval()
    _randomize_bn(model)
    x = torch.rand(2, 1, 6, 6)
    ref = model(x)
    assert find_conv_bn_pairs(model) == [("body.0", "body.1")]
    fold_batchnorm(model)
    assert torch.allclose(model(x), ref, atol=1e-5)


def test_bn_feeding_two_users_is_not_folded():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)
            self.bn = nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # conv output also used elsewhere: folding would change it

    assert find_conv_bn_pairs(Branch()) == []
