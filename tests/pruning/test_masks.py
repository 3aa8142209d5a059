"""Pruning masks on modules and the pure score → mask functions (nnshrink.pruning.masks)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import nnshrink as ns
from nnshrink.pruning import (
    MagnitudePruning,
    get_masks,
    global_masks,
    make_permanent,
    mask_from_scores,
    masks_from_zeros,
)
from nnshrink.pruning.masks import (
    is_nm,
    is_transposed_linear,
    matrix_to_weight,
    nm_mask_from_scores,
    parse_pattern,
    row_mask_from_scores,
    weight_matrix,
)


def _prune(model, config, **kwargs):
    """compress_ with the technique's summary (what the deprecated prune_ returned)."""
    return ns.compress_(model, config, **kwargs).summary


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
    _prune(model, MagnitudePruning(sparsity=0.6))
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
    _prune(model, MagnitudePruning(sparsity=0.5))
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


# ---- row and N:M masks, matrix views ---------------------------------------------------------


def test_row_mask_matches_per_row_numpy_argsort():
    scores = torch.rand(7, 10)
    mask = row_mask_from_scores(scores, 0.3)
    for r in range(7):
        drop = np.argsort(scores[r].numpy(), kind="stable")[:3]
        expected = np.ones(10, bool)
        expected[drop] = False
        np.testing.assert_array_equal(mask[r].numpy(), expected)


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (3, 8)])
def test_nm_mask_keeps_exactly_n_largest_per_group(n, m):
    scores = torch.randn(6, 4 * m)
    mask = nm_mask_from_scores(scores, n, m)
    groups, kept = scores.reshape(-1, m), mask.reshape(-1, m)
    assert bool((kept.sum(dim=1) == n).all()) and is_nm(mask, n, m)
    for g, k in zip(groups, kept):
        assert set(torch.topk(g, n).indices.tolist()) == set(torch.nonzero(k).flatten().tolist())
    with pytest.raises(ValueError, match="multiple of"):
        nm_mask_from_scores(torch.rand(2, 6), 2, 4)


def test_parse_pattern():
    assert parse_pattern("2:4") == (2, 4) and parse_pattern(" 4 : 8 ") == (4, 8)
    for bad in ("2/4", "4:2", "0:4", "4:4"):
        with pytest.raises(ValueError, match="pattern"):
            parse_pattern(bad)


def test_weight_matrix_views_write_through():
    conv = nn.Conv2d(3, 4, 3)
    assert weight_matrix(conv).shape == (4, 27)
    assert torch.equal(matrix_to_weight(conv, weight_matrix(conv)), conv.weight)

    class Conv1D(nn.Module):  # Hugging Face GPT-2's layout: weight (in, out)
        def __init__(self) -> None:
            super().__init__()
            self.nf, self.weight = 5, nn.Parameter(torch.randn(3, 5))

    layer = Conv1D()
    assert is_transposed_linear(layer) and not is_transposed_linear(nn.Linear(3, 5))
    assert torch.equal(weight_matrix(layer), layer.weight.T)
    with torch.no_grad():
        weight_matrix(layer)[0, 1] = 7.0  # row 0 = output 0, column 1 = input 1
    assert float(layer.weight.detach()[1, 0]) == 7.0
