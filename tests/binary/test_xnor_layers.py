"""XNOR-Net layers (nnshrink.binary.xnor_layers): training form, kernel eval, deploy form, storage."""

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.binary import BinaryWeights
from nnshrink.binary import xnor as xnor_ops
from nnshrink.binary.layers import pack_low_bit
from nnshrink.binary.ops import activation_scale
from nnshrink.binary.xnor import xnor_backend, xnor_conv2d_reference
from nnshrink.binary.xnor_layers import (
    PackedXNORConv2d,
    PackedXNORLinear,
    XNORConv2d,
    XNORLinear,
)
from nnshrink.pruning.structured import UnsupportedModelError
from nnshrink.storage.packbits import unpack_binary


def _trained_bn(layer: nn.Module, x: torch.Tensor) -> nn.Module:
    """Give the input batch norm non-trivial statistics and affine parameters."""
    layer.train()
    with torch.no_grad():
        for _ in range(3):
            layer(x)
        layer.input_norm.weight.uniform_(0.5, 1.5)
        layer.input_norm.bias.uniform_(-0.3, 0.3)
    return layer.eval()


def _backends():
    return ["torch"] if xnor_backend() == "torch" else ["torch", "portable", xnor_backend()]


def test_eval_conv_is_the_kernel_oracle_and_the_float_path():
    x = torch.randn(2, 21, 7, 7)
    layer = _trained_bn(XNORConv2d(21, 10, 3, stride=2, padding=1), x)
    with torch.no_grad():
        y = layer(x)
    norm = layer.input_norm
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    u = x * scale.view(1, -1, 1, 1) + (norm.bias - norm.running_mean * scale).view(1, -1, 1, 1)
    k = activation_scale(u, (3, 3), (2, 2), (1, 1))
    alpha = layer.weight.abs().mean(dim=(1, 2, 3))
    ref = xnor_conv2d_reference(u, layer.weight, stride=2, padding=1, k=k, alpha=alpha,
                                bias=layer.bias)  # fmt: skip
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)  # u folded in another order
    # the float (autograd) path in eval mode computes the same numbers as the kernel
    float_path = layer(x.clone().requires_grad_(True))
    assert float_path.grad_fn is not None and torch.equal(float_path.detach(), y)


@pytest.mark.parametrize("scale_activations", [True, False])
def test_deploy_forms_equal_training_forms_on_every_backend(monkeypatch, scale_activations):
    x2, x4 = torch.randn(3, 40), torch.randn(2, 13, 6, 6)
    lin = _trained_bn(XNORLinear(40, 9, scale_activations=scale_activations), x2)
    conv = _trained_bn(XNORConv2d(13, 11, (3, 2), padding=(1, 0), bias=False,
                                  scale_activations=scale_activations), x4)  # fmt: skip
    packed_lin, packed_conv = PackedXNORLinear.from_layer(lin), PackedXNORConv2d.from_layer(conv)
    assert packed_lin.weight_bits.numel() == (9 * 40 + 7) // 8
    outputs = {}
    for backend in _backends():
        monkeypatch.setenv("NNSHRINK_XNOR_BACKEND", backend)
        with torch.no_grad():
            outputs[backend] = (lin(x2), packed_lin(x2), conv(x4), packed_conv(x4))
        assert torch.equal(outputs[backend][0], outputs[backend][1])
        assert torch.equal(outputs[backend][2], outputs[backend][3])
    for backend in outputs:
        for a, b in zip(outputs[backend], outputs["torch"]):
            assert torch.equal(a, b), backend
    # pack_low_bit (summaries, CLI sizes) sees the same 1-bit weights in both forms
    deployed = unpack_binary(pack_low_bit(nn.Sequential(packed_conv))["0"])
    assert torch.equal(deployed, unpack_binary(pack_low_bit(nn.Sequential(conv))["0"]))


def test_training_gradients_follow_the_straight_through_rules():
    layer = XNORLinear(6, 3, bias=True)
    x = torch.randn(8, 6, requires_grad=True)
    layer(x).sum().backward()
    for p in (layer.weight, layer.bias, layer.input_norm.weight, layer.input_norm.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_kernel_cache_follows_weight_updates():
    layer = XNORConv2d(4, 4, 3, padding=1).eval()
    x = torch.randn(1, 4, 5, 5)
    with torch.no_grad():
        before = layer(x)
        layer.weight.neg_()  # in place, as optimizer.step does
        after = layer(x)
        fresh = XNORConv2d(4, 4, 3, padding=1).eval()
        fresh.load_state_dict(layer.state_dict())
        assert not torch.equal(before, after) and torch.equal(after, fresh(x))


def _model():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 70, 3, padding=1), nn.ReLU(),
        nn.Conv2d(70, 16, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 3 * 3, 20),
        nn.ReLU(), nn.Linear(20, 5),
    )  # fmt: skip


def test_compress_finalize_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model, x = _model(), torch.randn(4, 1, 8, 8)
    rows = ns.compress_(model, BinaryWeights(mode="xnor", activations=True)).summary
    assert [r.replaced_by for r in rows] == ["XNORConv2d", "XNORConv2d", "XNORLinear"]
    assert type(model[0]) is nn.Conv2d and type(model[9]) is nn.Linear
    macs = ns.metrics.count_macs(model, x[:1])
    assert macs == ns.metrics.count_macs(_model(), x[:1])
    model.train()
    model(x).sum().backward()
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert ns.finalize(model) == {"xnor": ["2", "4", "7"]}
    assert isinstance(model[2], PackedXNORConv2d) and isinstance(model[7], PackedXNORLinear)
    with torch.no_grad():
        assert torch.equal(model(x), y)
    assert ns.metrics.count_macs(model, x[:1]) == macs
    path = tmp_path / "xnor.nns"
    ns.save(model, path)
    loaded = ns.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    tensors = ns.storage.read_header(path)["tensors"]
    bits = tensors["4.weight_bits"]
    assert bits["dtype"] == "uint8" and bits["numel"] == (16 * 70 * 9 + 7) // 8  # 1 bit/weight


def test_training_form_checkpoint_round_trip(tmp_path):
    model, x = ns.models.create("lenet5"), torch.randn(2, 1, 28, 28)
    ns.compress_(model, BinaryWeights(mode="xnor", activations=True, scale_activations=False))
    model.eval()
    path = ns.save_checkpoint(model, tmp_path / "xnor.safetensors")
    loaded, _ = ns.load_checkpoint(path)
    conv = loaded.features[2]
    assert isinstance(conv, XNORConv2d) and conv.scale_activations is False
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_unsupported_conv_is_refused_before_any_edit():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2), nn.Conv2d(4, 4, 3),
                          nn.Conv2d(4, 2, 3))  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="exclude"):
        ns.compress_(model, BinaryWeights(mode="xnor", activations=True))
    assert all(type(m) is nn.Conv2d for m in model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="groups=1"):
        XNORConv2d(4, 4, 3, groups=2)


def test_no_compiler_gives_the_same_outputs(monkeypatch):
    layer = _trained_bn(XNORConv2d(9, 5, 3, padding=1), torch.randn(2, 9, 6, 6))
    x = torch.randn(2, 9, 6, 6)
    with torch.no_grad():
        kernel = layer(x)
        monkeypatch.setattr(xnor_ops, "kernel_library", lambda: None)
        assert torch.equal(layer(x), kernel)
