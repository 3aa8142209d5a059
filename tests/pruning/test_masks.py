"""Pruning masks on modules and the pure score → mask functions (nnshrink.pruning.masks)."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from nnshrink.pruning import (
    MagnitudePruning,
    get_masks,
    global_masks,
    make_permanent,
    mask_from_scores,
    masks_from_zeros,
    prune_,
)


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 12), nn.ReLU(), nn.Linear(12, 4)
    )


def test_mask_from_scores_matches_numpy_threshold():
    w = torch.randn(37, 11)
    for sparsity in (0.0, 0.3, 0.5, 0.95):
        k = round(sparsity * w.numel())
        a = np.abs(w.numpy()).ravel()
        thr = np.sort(a)[k - 1] if k else -1.0
        expected = np.abs(w.numpy()) > thr
        mask = mask_from_scores(w.abs(), sparsity)
        np.testing.assert_array_equal(mask.numpy(), expected)
        assert int((~mask).sum()) == k


def test_mask_from_scores_exact_count_with_ties():
    mask = mask_from_scores(torch.zeros(10), 0.3)
    assert mask.tolist() == [False] * 3 + [True] * 7


def test_global_masks_one_threshold():
    scores = {"a": torch.rand(50), "b": torch.rand(20, 3) * 0.1}
    masks = global_masks(scores, 0.5)
    everything = np.concatenate([s.numpy().ravel() for s in scores.values()])
    thr = np.sort(everything)[55 - 1]
    for k, s in scores.items():
        np.testing.assert_array_equal(masks[k].numpy(), s.numpy() > thr)


def test_make_permanent_leaves_plain_module_with_same_outputs(tiny_convnet, mnist_batch):
    model = tiny_convnet.eval()
    reference = copy.deepcopy(model).state_dict().keys()
    prune_(model, MagnitudePruning(sparsity=0.6))
    out_masked = model(mnist_batch)
    assert make_permanent(model) == 3
    assert list(model.named_buffers()) == [
        (n, b) for n, b in model.named_buffers() if not n.endswith("_mask")
    ]
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())
    for m in model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks
    assert model.state_dict().keys() == reference
    torch.testing.assert_close(model(mnist_batch), out_masked, rtol=0, atol=0)
    assert make_permanent(model) == 0


def test_state_dict_is_ordinary_and_masks_restore_from_zeros():
    model = _mlp()
    prune_(model, MagnitudePruning(sparsity=0.5))
    fresh = _mlp()
    fresh.load_state_dict(model.state_dict())  # strict: no extra keys from the masks
    assert masks_from_zeros(fresh) == 3
    for k, m in get_masks(model).items():
        assert torch.equal(get_masks(fresh)[k], m)
    clone = copy.deepcopy(model)
    assert get_masks(clone).keys() == get_masks(model).keys()


def test_make_permanent_removes_torch_prune_reparametrization():
    lin = nn.Linear(6, 6)
    torch_prune.l1_unstructured(lin, "weight", amount=0.5)
    assert make_permanent(lin) == 1
    assert [n for n, _ in lin.named_parameters()] == ["bias", "weight"]
    assert not lin._forward_pre_hooks and int((lin.weight == 0).sum()) == 18
