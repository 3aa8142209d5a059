"""Selection: counts, rounding, constraints, global ranking."""

from __future__ import annotations

import pytest
import torch

from nnshrink.pruning.select import (
    allowed_keep,
    keep_count,
    select_global,
    select_local,
    topk_keep,
)


def test_local_removes_lowest_scores():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    assert select_local(scores, 0.5).tolist() == [0, 2, 4]
    assert select_local(scores, 0.0).tolist() == list(range(6))


def test_round_to_multiple_and_never_empty():
    assert allowed_keep(20, round_to=8) == [8, 16, 20]
    assert keep_count(20, 10, round_to=8) == 8
    assert keep_count(20, 12, round_to=8) == 16  # tie goes to keeping more
    assert keep_count(20, 0.2, round_to=8) == 8  # never below round_to
    assert keep_count(5, 0.0) == 1  # never zero
    assert keep_count(6, 1.0, round_to=8) == 6  # smaller than round_to: keep whole group
    kept = select_local(torch.arange(64.0), 0.9, round_to=8)
    assert kept.tolist() == list(range(56, 64))


def test_fixed_channels_are_always_kept():
    scores = torch.tensor([0.0, 5.0, 4.0, 3.0])
    fixed = torch.tensor([True, False, False, False])
    assert select_local(scores, 0.5, fixed=fixed).tolist() == [0, 1]
    assert keep_count(4, 1, fixed=torch.tensor([True, True, True, False])) == 3


def test_blocks_keep_equal_counts():
    scores = torch.tensor([9.0, 8.0, 7.0, 6.0, 1.0, 2.0, 3.0, 0.0])
    blocks = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    kept = select_local(scores, 0.5, blocks=blocks)
    assert kept.tolist() == [0, 1, 5, 6]  # two per block, not the four best overall
    assert keep_count(8, 3, blocks=blocks) == 4  # multiple of the 2 blocks
    with pytest.raises(ValueError, match="multiple"):
        topk_keep(scores, 3, blocks=blocks)


def test_global_ranking_across_groups():
    weak = torch.tensor([1.0, 1.0, 0.01, 0.01])
    strong = torch.tensor([1.0, 1.0, 1.0, 1.0])
    kept = select_global([weak, strong], 0.25, normalize=False)
    assert kept[0].tolist() == [0, 1] and kept[1].tolist() == [0, 1, 2, 3]


def test_global_ranking_normalizes_scale():
    # same relative pattern at different scales: both groups lose the same channel
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    kept = select_global([a, 1000 * a], 0.25)
    assert kept[0].tolist() == [1, 2, 3] and kept[1].tolist() == [1, 2, 3]


def test_global_respects_minimum_and_fixed():
    weak = torch.tensor([0.0, 0.0, 0.0])
    strong = torch.tensor([5.0, 5.0, 5.0])
    kept = select_global([weak, strong], 0.5, normalize=False)
    assert kept[0].numel() == 1 and kept[1].numel() == 3
    fixed = [torch.tensor([True, True, False]), None]
    kept = select_global([weak, strong], 0.5, fixed=fixed, normalize=False)
    assert kept[0].tolist() == [0, 1]


def test_bad_ratio():
    with pytest.raises(ValueError):
        select_local(torch.ones(3), 1.0)
    with pytest.raises(ValueError):
        select_global([torch.ones(3)], -0.1)
