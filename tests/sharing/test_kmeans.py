import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.sharing.kmeans import (
    SharedWeightConv2d,
    SharedWeightLinear,
    WeightSharing,
    codebook_of,
    kmeans_1d,
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


def test_pruned_zeros_survive_optimizer_steps_and_indices_fixed():
    model = nn.Sequential(_pruned_linear(), nn.ReLU(), nn.Linear(6, 3))
    zeros = model[0].weight == 0
    ns.compress_(model, WeightSharing(bits=4))
    indices = model[0].indices.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 20)).logsumexp(1).sum().backward()
        opt.step()
    assert torch.all(model[0].weight[zeros] == 0)
    assert torch.equal(model[0].indices, indices)
    assert model[0].weight[~zeros].unique().numel() <= 16


def test_compress_bits_per_layer_and_summary(tiny_convnet, mnist_batch):
    cfg = WeightSharing(bits=4, conv_bits=6, fc_bits=3, per_layer={"conv2": 2})
    rows = ns.compress_(tiny_convnet, cfg)
    by_name = {r.name: r for r in rows}
    assert by_name["conv1"].bits == 6 and by_name["conv2"].bits == 2 and by_name["fc"].bits == 3
    assert tiny_convnet.conv2.codebook.numel() == 4
    assert all(r.clusters_used <= 2**r.bits for r in rows)
    assert tiny_convnet(mnist_batch).shape == (4, 10)
    macs = ns.metrics.count_macs(tiny_convnet, mnist_batch)
    assert macs == 4 * (28 * 28 * 8 * 9 + 28 * 28 * 16 * 8 * 9 + 64 * 10)


def test_compress_respects_filter_and_bad_layers_leave_model_untouched():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), nn.Linear(2, 2))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="padding_mode"):
        ns.compress_(model, WeightSharing())
    assert type(model[1]) is nn.Linear and model.state_dict().keys() == before.keys()
    ns.compress_(model, WeightSharing(bits=2), filter_fn=lambda m, n: n == "1")
    assert type(model[0]) is nn.Conv2d and isinstance(model[1], SharedWeightLinear)


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


def test_config_round_trip_and_validation():
    cfg = WeightSharing(bits=6, conv_bits=8, fc_bits=5, per_layer={"fc.*": 4}, init="density")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "weight-sharing", "bits": 3}) == WeightSharing(bits=3)
    with pytest.raises(ConfigError):
        WeightSharing(bits=9)
    with pytest.raises(ConfigError):
        WeightSharing(per_layer={"(": 3})
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "weight-sharing", "init": "kmeans++"})


def test_checkpoint_rebuilds_shared_layers(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = ns.models.create("lenet5")
    ns.compress_(model, WeightSharing(conv_bits=8, fc_bits=5))
    path = save_checkpoint(model, tmp_path / "shared.safetensors")
    loaded, _ = load_checkpoint(path)
    assert isinstance(loaded.features[0], SharedWeightConv2d) and loaded.features[0].bits == 8
    assert isinstance(loaded.classifier[1], SharedWeightLinear)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))


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
