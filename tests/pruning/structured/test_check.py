"""Plan, check, apply: checks run on a copy; ties survive; the one deprecation path."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from nnshrink.core import Config
from nnshrink.pruning.structured import PlanError, StructuredPruning
from nnshrink.pruning.structured.check import check_plan, retie, ties


def test_check_runs_on_a_copy_and_names_the_failing_module():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    before = copy.deepcopy(model.state_dict())

    def cut(root):
        root[2].weight = nn.Parameter(root[2].weight[:, :3])  # its input still has 6

    with pytest.raises(PlanError, match="'2' \\(Linear\\)"):
        check_plan(model, cut, torch.randn(1, 4), [(1, 2)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(PlanError, match="changed shape"):
        check_plan(model, lambda root: None, torch.randn(1, 4), [(1, 3)])


def test_ties_are_found_and_restored():
    emb, head = nn.Embedding(5, 4), nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    model = nn.ModuleDict({"emb": emb, "head": head})
    tied = ties(model)
    assert tied == [[("emb", "weight"), ("head", "weight")]]
    emb.weight = nn.Parameter(emb.weight[:, :2].clone())
    head.weight = nn.Parameter(head.weight[:, :2].clone())
    retie(model, tied)
    assert model["head"].weight is model["emb"].weight
    head.weight = nn.Parameter(torch.ones(5, 1))
    with pytest.raises(PlanError, match="sliced differently"):
        retie(model, tied)


def test_new_vocabulary_and_deprecated_names():
    new = StructuredPruning(sparsity=0.3, scope="global", exclude=("fc",))
    with pytest.warns(DeprecationWarning, match="sparsity"):
        old = StructuredPruning(ratio=0.3, global_ranking=True, ignore=("fc",))
    assert old == new
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = Config.from_dict({"type": "structured-pruning", "ratio": 0.3,
                                   "global_ranking": True, "ignore": ["fc"]})  # fmt: skip
        assert loaded == new and new.ratio == 0.3 and new.global_ranking and new.ignore == ("fc",)
    assert Config.from_dict(new.to_dict()) == new
    assert StructuredPruning(head_sparsity=0.25).head_amount == 0.25
    from nnshrink.pruning.structured import StructuredPruning as FromPackage

    assert FromPackage is StructuredPruning


def test_plugins_register_zoo_rules_without_pruning_importing_the_zoo_by_class():
    import inspect

    import nnshrink.pruning.structured.graph as graph
    import nnshrink.pruning.structured.layer_ops as layer_ops
    from nnshrink.models.resnet import ZeroPadShortcut
    from nnshrink.pruning.structured import ops_for

    assert ops_for(ZeroPadShortcut(2, 4, 2)).coupling == "custom"
    for module in (graph, layer_ops):
        assert "ZeroPadShortcut" not in inspect.getsource(module).replace("``ZeroPadShortcut``", "")
