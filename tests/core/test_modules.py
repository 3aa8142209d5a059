"""Module-tree utilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.core import as_input_tuple, model_device, named_layers, set_submodule


def test_set_submodule_nested(tiny_convnet):
    set_submodule(tiny_convnet, "conv1", nn.Conv2d(1, 8, 1))
    assert tiny_convnet.conv1.kernel_size == (1, 1)
    seq = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    set_submodule(seq, "0.0", nn.Identity())
    assert isinstance(seq[0][0], nn.Identity)


def test_set_submodule_errors(tiny_convnet):
    with pytest.raises(ValueError, match="root"):
        set_submodule(tiny_convnet, "", nn.Identity())
    with pytest.raises(AttributeError, match="nope"):
        set_submodule(tiny_convnet, "nope", nn.Identity())


def test_named_layers_filters(tiny_convnet):
    names = [n for n, _ in named_layers(tiny_convnet)]
    assert names == ["conv1", "conv2", "fc"]
    names = [n for n, _ in named_layers(tiny_convnet, filter_fn=lambda m, n: n != "fc")]
    assert names == ["conv1", "conv2"]


def test_as_input_tuple_and_device():
    x = torch.zeros(1)
    assert as_input_tuple(x) == (x,)
    assert as_input_tuple([x, x]) == (x, x)
    with pytest.raises(ValueError, match="example_inputs"):
        as_input_tuple(None)
    assert model_device(nn.ReLU()).type == "cpu"


def test_forward_with_hooks_restores_mode_and_removes_hooks_even_on_error():
    from nnshrink.core import eval_mode, forward_with_hooks

    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5)).train()
    seen = []
    handle = model[0].register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    out = forward_with_hooks(model, torch.ones(1, 2), [handle])
    assert model.training and not model[0]._forward_hooks
    assert seen == [False] and not out.requires_grad  # no-grad pass
    bad = model[0].register_forward_hook(lambda m, i, o: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        forward_with_hooks(model, torch.ones(1, 2), [bad])
    assert model.training and not model[0]._forward_hooks
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError
    assert model.training


def test_forward_with_hooks_passes_a_dict_as_keyword_inputs():
    from nnshrink.core import forward_with_hooks

    class Keywords(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(4, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.proj(input_ids * attention_mask)

    model, seen = Keywords(), []
    handle = model.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    ids, mask = torch.ones(3, 4), torch.zeros(3, 4)
    out = forward_with_hooks(model, {"attention_mask": mask, "input_ids": ids}, [handle])
    assert seen == [torch.Size([3, 4])] and not model.proj._forward_pre_hooks
    assert torch.equal(out, model.proj.bias.expand(3, 2))  # the mask reached its keyword
