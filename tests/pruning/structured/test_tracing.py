"""The two tracers: eager reaches what fx cannot, and both find the same groups where both work."""

from __future__ import annotations

import operator

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.pruning.structured import DependencyGraph, build_groups
from nnshrink.pruning.structured.functions import category
from nnshrink.pruning.structured.tracing import is_leaf, trace_eager


def _groups(model, x, tracer):
    graph = DependencyGraph(model, x, tracer=tracer)
    assert graph.tracer == tracer
    return sorted((tuple(sorted((e.name, e.dim) for e in g.edits)), g.size, int(g.fixed.sum()))
                  for g in build_groups(model, x, graph=graph))  # fmt: skip


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "vit"])
def test_fx_and_eager_find_the_same_groups(name):
    model = ns.models.create(name, **({"depth": 2} if name == "vit" else {}))
    x = torch.randn(1, 1, 28, 28)
    assert _groups(model, x, "fx") == _groups(model, x, "eager")


def test_eager_sees_leaves_and_functions_with_module_scope():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.fc(x)) + 1

    seen = []

    class Log:
        def input(self, value):
            return None

        def param(self, *args):
            return None

        def visit(self, call):
            seen.append((call.kind, call.where))

        def output(self, infos, value):
            pass

    trace_eager(Net(), (torch.zeros(2, 4),), {}, Log())
    assert seen[0] == ("module", "module 'fc' (Linear)")
    assert [k for k, _ in seen[1:]] == ["function", "method"]


def test_leaf_policy_and_categories():
    assert is_leaf(nn.Linear(2, 2)) and is_leaf(nn.ReLU()) and is_leaf(nn.LSTM(2, 2))
    assert not is_leaf(nn.TransformerEncoderLayer(8, 2)) and not is_leaf(nn.Sequential())
    assert category("method", "__rmul__") == category("function", operator.mul) == "elementwise"
    assert category("function", torch.nn.functional.scaled_dot_product_attention) == "sdpa"
    assert category("method", "cumsum") == "unknown"


def test_keyword_inputs_are_traced_eagerly():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 6), nn.Linear(6, 2)

        def forward(self, x=None, scale=1.0):
            return self.b(torch.relu(self.a(x))) * scale

    graph = DependencyGraph(Net(), {"x": torch.randn(2, 3), "scale": 2.0})
    assert graph.tracer == "eager" and len(graph.edits) == 4
