import copy

import pytest
import torch
from torch import nn

from nnshrink.core import compress_, transaction
from nnshrink.core.result import CompressResult


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    assert repr(a) == repr(b)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_restores_values_structure_attributes_and_identities(tiny_convnet):
    model = tiny_convnet.train()
    reference = copy.deepcopy(model)
    weight, conv = model.conv1.weight, model.conv1
    model.conv1.weight.grad = torch.ones_like(model.conv1.weight)
    with pytest.raises(RuntimeError, match="boom"), transaction(model):
        model.conv1.weight.data = torch.zeros(2, 1, 3, 3)  # new shape
        model.conv1.out_channels = 2
        model.bn1.running_mean.add_(5)
        model.fc = nn.Identity()
        model.eval()
        model.register_forward_hook(lambda *a: None)
        raise RuntimeError("boom")
    assert model.conv1 is conv and model.conv1.weight is weight  # the user's objects
    assert model.training and not model._forward_hooks
    assert torch.equal(model.conv1.weight.grad, torch.ones_like(weight))
    _same(model, reference, torch.randn(2, 1, 28, 28))


def test_success_keeps_the_edit(tiny_mlp):
    with transaction(tiny_mlp):
        tiny_mlp[1] = nn.Identity()
    assert isinstance(tiny_mlp[1], nn.Identity)


def test_compress_returns_one_result_type_and_measures(tiny_mlp):
    from ..conftest import ZeroSmallest

    result = compress_(tiny_mlp, ZeroSmallest(fraction=0.5), example_inputs=torch.zeros(1, 16))
    assert isinstance(result, CompressResult) and result.technique == "test-zero-smallest"
    assert result.before["params"] == result.after["params"]
    assert result.after["nonzero_params"] < result.before["nonzero_params"]
    assert result.before["macs"] == 16 * 32 + 32 * 4
    assert result.summary["layers"] and result.to_dict()["summary"] == result.summary


def test_finalize_makes_every_training_time_form_plain():
    import nnshrink as ns

    model = ns.models.create("lenet300")
    ns.compress_(model, ns.MagnitudePruning(sparsity=0.8))
    assert ns.finalize(model) == {"masks": ["1", "3", "5"]}
    ns.compress_(model, ns.WeightSharing(bits=3))
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x)
    assert ns.finalize(model) == {"sharing": ["1", "3", "5"]}
    assert all(type(m) in (nn.Linear, nn.Flatten, nn.ReLU, nn.Sequential) for m in model.modules())
    assert not [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert ns.finalize(model) == {}  # nothing left to make final
