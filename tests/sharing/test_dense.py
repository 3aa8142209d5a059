import torch
from torch import nn

import nnshrink as ns
from nnshrink.sharing import (
    Circulant,
    CirculantLinear,
    HashedLinear,
    Hashing,
    SharedWeightLinear,
    WeightSharing,
    dense_equivalent,
)


def test_every_sharing_layer_becomes_plain_with_the_same_outputs():
    model = ns.models.create("lenet300")
    ns.compress_(model, Hashing(sparsity=0.9, include=("1",)))
    ns.compress_(model, Circulant(include=("3",)))
    ns.compress_(model, WeightSharing(bits=3, include=("5",)))
    assert [type(model[i]) for i in (1, 3, 5)] == [
        HashedLinear,
        CirculantLinear,
        SharedWeightLinear,
    ]
    x = torch.randn(4, 1, 28, 28)
    plain = dense_equivalent(model)
    assert all(type(plain[i]) is nn.Linear for i in (1, 3, 5))
    assert type(model[1]) is HashedLinear  # a copy by default
    torch.testing.assert_close(plain(x), model(x), rtol=1e-4, atol=1e-5)
    assert ns.metrics.count_params(plain) == 266_610


def test_inplace_and_bare_layers():
    layer = HashedLinear(6, 3, buckets=4)
    x = torch.randn(2, 6)
    torch.testing.assert_close(dense_equivalent(layer)(x), layer(x))
    model = nn.Sequential(CirculantLinear(6, 3))
    assert dense_equivalent(model, inplace=True) is model and type(model[0]) is nn.Linear
