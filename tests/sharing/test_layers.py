import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.sharing.clustering import kmeans_1d
from nnshrink.sharing.kmeans import WeightSharing
from nnshrink.sharing.layers import (
    SharedWeightConv2d,
    SharedWeightLinear,
    codebook_of,
    is_shared,
    share_weights,
    strip_sharing,
)


def _pruned_linear():
    lin = nn.Linear(20, 6)
    with torch.no_grad():
        lin.weight[lin.weight.abs() < 0.08] = 0
    return lin


def test_shared_linear_weight_uses_codebook_and_keeps_zeros():
    lin = _pruned_linear()
    shared = share_weights(lin, bits=3)
    assert isinstance(shared, SharedWeightLinear)
    w = shared.weight
    zeros = lin.weight == 0
    assert torch.all(w[zeros] == 0)
    assert set(w[~zeros].unique().tolist()) <= set(shared.codebook.tolist())
    x = torch.randn(4, 20)
    torch.testing.assert_close(shared(x), nn.functional.linear(x, w, lin.bias))
    # clustering only saw non-zero weights: no centroid is dragged to 0 by the pruned ones
    centroids, _ = kmeans_1d(lin.weight[~zeros], 8)
    torch.testing.assert_close(shared.codebook.double(), centroids, atol=1e-6, rtol=0)


def test_centroid_gradient_is_sum_of_member_gradients():
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight[0, 0] = 0  # a pruned patch
    shared = share_weights(conv, bits=2)
    assert isinstance(shared, SharedWeightConv2d)
    x = torch.randn(2, 3, 7, 7)
    # oracle: gradient w.r.t. the dense materialised weight, then scatter-add by index
    dense = shared.weight.detach().clone().requires_grad_(True)
    nn.functional.conv2d(x, dense, shared.bias).pow(2).sum().backward()
    expected = torch.zeros(4).index_add_(
        0, shared.indices[shared.mask].long(), dense.grad[shared.mask]
    )
    shared(x).pow(2).sum().backward()
    torch.testing.assert_close(shared.codebook.grad, expected)


def test_strip_sharing_and_codebook_of_round_trip(tiny_convnet, mnist_batch):
    ns.compress_(tiny_convnet, WeightSharing(bits=3))
    tiny_convnet.eval()
    out = tiny_convnet(mnist_batch)
    shared_books = {
        n: codebook_of(m) for n, m in tiny_convnet.named_modules() if hasattr(m, "codebook")
    }
    strip_sharing(tiny_convnet)
    assert type(tiny_convnet.conv1) is nn.Conv2d and type(tiny_convnet.fc) is nn.Linear
    torch.testing.assert_close(tiny_convnet(mnist_batch), out)
    for name, (book, idx, mask) in shared_books.items():
        plain = tiny_convnet.get_submodule(name)
        cb2, idx2, mask2 = codebook_of(plain)
        recon = cb2[idx2.long()] * mask2
        assert torch.equal(recon, plain.weight)
        assert torch.equal(book[idx.long()] * mask, plain.weight)
        assert idx2.dtype == torch.uint8 and cb2.numel() <= 8


def test_codebook_of_rejects_unshared_layer():
    with pytest.raises(ValueError, match="WeightSharing"):
        codebook_of(nn.Linear(100, 100))


def test_shared_module_state_dict_reload():
    src = nn.Sequential(nn.Linear(10, 5))
    ns.compress_(src, WeightSharing(bits=2))
    dst = nn.Sequential(SharedWeightLinear(10, 5, bits=2))
    dst.load_state_dict(src.state_dict())
    x = torch.randn(3, 10)
    torch.testing.assert_close(dst(x), src(x))


def test_centroid_gradients_are_reproducible_with_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        g = torch.Generator().manual_seed(0)
        lin = SharedWeightLinear(784, 300, bits=5)
        lin.set_sharing(torch.randn(32, generator=g), torch.randint(0, 32, (300, 784), generator=g))
        x = torch.randn(64, 784, generator=g)
        grads = set()
        for _ in range(8):
            lin.zero_grad()
            lin(x).square().sum().backward()
            grads.add(lin.codebook.grad.numpy().tobytes())
        assert len(grads) == 1
    finally:
        torch.set_num_threads(threads)


def test_represented_params_count_every_weight_against_the_plain_layer():
    lin = _pruned_linear()
    shared = share_weights(lin, bits=3)
    counts = shared.represented_params()
    plain = nn.Linear(20, 6)  # oracle: the plain layer the shared one stands for, + codebook
    assert counts["params"] == ns.metrics.count_params(plain) + 8
    nonzero_codebook = int((shared.codebook != 0).sum())
    assert counts["nonzero_params"] == ns.metrics.count_nonzero_params(lin) + nonzero_codebook
    assert is_shared(shared) and not is_shared(lin)
