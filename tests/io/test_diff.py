"""Structural edits: outermost replacements and plain attribute changes, recorded and re-applied."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from nnshrink.io import ArchitectureError, apply_diff, attr_changes, describe, tree_diff


class Attention(nn.Module):
    """A toy attention block whose head count lives in plain attributes (as in transformers)."""

    def __init__(self, dim: int = 8, heads: int = 2):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.all_head_size = self.num_heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * self.all_head_size)
        self.out = nn.Linear(self.all_head_size, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim).unbind(2)
        att = torch.softmax(q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2), -1)
        y = (att @ v.transpose(1, 2)).transpose(1, 2).reshape(b, t, self.all_head_size)
        return self.out(y)


def _prune_one_head(att: Attention) -> None:
    keep = torch.arange(att.head_dim)  # head 0 of q, k and v
    rows = torch.cat([keep + i * att.all_head_size for i in range(3)])
    qkv = nn.Linear(att.qkv.in_features, rows.numel())
    qkv.weight.data, qkv.bias.data = att.qkv.weight.data[rows], att.qkv.bias.data[rows]
    out = nn.Linear(att.head_dim, att.out.out_features)
    out.weight.data, out.bias.data = att.out.weight.data[:, keep], att.out.bias.data.clone()
    att.qkv, att.out = qkv, out
    att.num_heads, att.all_head_size = 1, att.head_dim


def test_diff_lists_outermost_changes_and_applies():
    ref = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    edited = nn.Sequential(nn.Linear(4, 2), nn.Sequential(nn.Linear(2, 4), nn.ReLU()))
    edited[1][1] = nn.Sequential(nn.ReLU(), nn.Identity())
    diff = tree_diff(ref, edited)
    assert set(diff) == {"0", "1.0", "1.1"}
    rebuilt = apply_diff(ref, diff)
    assert describe(rebuilt) == describe(edited)
    assert tree_diff(ref, ref) == {}


def test_head_pruned_attention_is_rebuilt_exactly():
    """Oracle: the edited module itself; attributes decide the forward pass, so they must come back."""
    model = nn.Sequential(Attention(), nn.ReLU())
    _prune_one_head(model[0])
    diff = json.loads(json.dumps(tree_diff(nn.Sequential(Attention(), nn.ReLU()), model)))
    assert diff["0"] == {"attrs": {"num_heads": 1, "all_head_size": 4}}
    assert set(diff) == {"0", "0.qkv", "0.out"}
    rebuilt = apply_diff(nn.Sequential(Attention(), nn.ReLU()), diff)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 8)
    assert torch.equal(rebuilt(x), model(x))


def test_attribute_types_survive_json():
    ref, new = nn.Identity(), nn.Identity()
    new.kernel = (3, 3)
    new.heads_pruned = {1, 3}
    new.frozen = frozenset({"a"})
    new.scale, new.inf = math.nan, -math.inf
    new.flag, new.name, new.none, new.nested = True, "x", None, [(1, 2), [3]]
    new.not_plain = object()  # skipped: not a plain value
    new._private = 5  # skipped: private
    diff = json.loads(json.dumps(tree_diff(ref, new), allow_nan=False))
    back = apply_diff(nn.Identity(), diff)
    assert back.kernel == (3, 3) and back.heads_pruned == {1, 3} and back.frozen == frozenset("a")
    assert math.isnan(back.scale) and back.inf == -math.inf and back.nested == [(1, 2), [3]]
    assert (back.flag, back.name, back.none) == (True, "x", None)
    assert not hasattr(back, "not_plain") and not hasattr(back, "_private")
    drop = nn.Dropout(0.1)
    assert attr_changes(drop, copy.deepcopy(drop)) == {}
    changed = copy.deepcopy(drop)
    changed.p = 1  # same value, other type: recorded
    assert attr_changes(drop, changed) == {"p": 1}


@pytest.mark.parametrize(
    "diff, match",
    [
        ({"0": {"attrs": {"forward": 1}}}, "not a plain value"),
        ({"0": {"attrs": {"weight": 1}}}, "not a plain value"),
        ({"0": {"attrs": {"training": False}}}, "not a plain value"),
        ({"0": {"attrs": {"__class__": 1}}}, "not a public attribute"),
        ({"0": {"attrs": {"x": {"eval": "1"}}}}, "not a plain attribute value"),
        ({"0": {"attrs": [1]}}, "must map names"),
        ({"9": {"attrs": {"x": 1}}}, "not a submodule"),
        ({"0.__class__": {"class": "torch.nn.ReLU"}}, "not a submodule"),
        ({"nope": {"class": "torch.nn.ReLU"}}, "not a submodule"),
        ({"0": {"class": "os.system"}}, "allow-list"),
        ({"0": [1]}, "description is"),
        ([1], "must map"),
    ],
)  # fmt: skip
def test_bad_edits_are_refused(diff, match):
    with pytest.raises(ArchitectureError, match=match):
        apply_diff(nn.Sequential(nn.Linear(2, 2)), diff)


def test_root_replacement_and_root_attrs():
    ref = nn.Sequential(nn.Linear(2, 2))
    new = nn.Sequential(nn.Linear(2, 2))
    new.label = "v2"
    assert tree_diff(ref, new) == {"": {"attrs": {"label": "v2"}}}
    assert apply_diff(ref, tree_diff(ref, new)).label == "v2"
    other = nn.Linear(2, 2)
    assert isinstance(apply_diff(ref, tree_diff(ref, other)), nn.Linear)
    with pytest.raises(ArchitectureError, match="top-level children changed"):
        tree_diff(ref, nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
