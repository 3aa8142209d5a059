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
