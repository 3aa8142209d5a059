"""Head attributes follow the kept heads; others stay."""

from __future__ import annotations

from torch import nn

from nnshrink.pruning.structured import update_head_attributes


def test_query_and_key_value_counts_and_widths():
    m = nn.Module()
    m.num_heads, m.num_key_value_heads, m.head_dim, m.all_head_size = 8, 2, 4, 32
    m.hidden_size, m.num_key_value_groups, m.flag = 32, 4, True
    changed = update_head_attributes(m, [(8, 4), (2, 1), (2, 1)], head_dim=4)
    assert changed == {"num_heads": (8, 4), "num_key_value_heads": (2, 1),
                       "all_head_size": (32, 16)}  # fmt: skip
    # the residual width and the queries per key/value head do not change
    assert (m.hidden_size, m.num_key_value_groups, m.head_dim) == (32, 4, 4)


def test_nothing_removed_changes_nothing():
    m = nn.Module()
    m.num_heads = 4
    assert update_head_attributes(m, [(4, 4)], head_dim=8) == {} and m.num_heads == 4
    assert update_head_attributes(m, [], head_dim=8) == {}
