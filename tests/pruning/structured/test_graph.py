"""Coupling structures: each test model is pruned and must equal its zeroed dense copy."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nnshrink.pruning.structured import (
    DependencyGraph,
    StructuredPruner,
    StructuredPruning,
    UnsupportedModelError,
    build_groups,
)

from .helpers import check_equivalent


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 8, 3, padding=1)
        self.b = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(14)
        self.c = nn.Conv2d(14, 10, 3, padding=1)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.fc(F.adaptive_avg_pool2d(self.c(y), 1).flatten(1))


class SplitNet(nn.Module):
    """chunk (prunable with equal halves) and a literal split (whose channels must stay)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 8, 3, padding=1)
        self.side = nn.Conv2d(1, 8, 1)
        self.merge = nn.Conv2d(16 + 4, 12, 1)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        a, b = torch.relu(self.bn(self.stem(x))).chunk(2, dim=1)
        p, q = torch.split(self.side(x), [4, 4], dim=1)
        y = torch.cat([self.left(a), self.right(b), p * q], dim=1)
        return self.fc(self.merge(y).mean((2, 3)))


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 1)
        self.bn1 = nn.BatchNorm2d(16)
        self.gconv = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.bn2 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn3 = nn.BatchNorm2d(16)
        self.pw = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.gconv(x)))
        x = torch.relu(self.bn3(self.dw(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.pw(x), 1), 1))


class SENet(nn.Module):
    def __init__(self, index_gate: bool = False):
        super().__init__()
        self.index_gate = index_gate
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(16, 4)
        self.fc2 = nn.Linear(4, 16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1)))))
        if self.index_gate:
            x = x * gate[:, :, None, None]
        else:
            x = x * gate.view(gate.size(0), gate.size(1), 1, 1)
        return self.head(self.pool(self.conv2(x)).flatten(1))


class ReuseNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.shared(x))
        x = torch.relu(self.shared(x))
        return self.head(x.mean((2, 3)))


class FlattenNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5)
        self.fc1 = nn.Linear(6 * 12 * 12, 20)
        self.fc2 = nn.Linear(20, 3)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))


def _x(batch=2):
    return torch.randn(batch, 1, 28, 28)


def _group_of(model, name, x):
    """The group holding the output channels of module ``name``."""
    groups = build_groups(model, x)
    return next(g for g in groups if any(e.name == name and e.dim == "out" for e in g.edits))


def _sizes(model):
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def test_concat_couples_both_producers_with_consumer():
    model = ConcatNet()
    group = _group_of(model, "a", _x())
    assert set(group.modules) == {"a", "b", "bn", "c"} and group.size == 14
    check_equivalent(model, _x())
    assert model.a.out_channels + model.b.out_channels == model.bn.num_features == 7
    assert model.c.in_channels == 7


def test_chunk_keeps_equal_halves_and_literal_split_is_fixed():
    model = SplitNet()
    check_equivalent(model, _x())
    assert model.stem.out_channels == 8
    assert model.left.in_channels == model.right.in_channels == 4  # 4 kept per half
    assert model.side.out_channels == 8  # split([4, 4]) uses literal sizes: untouchable
    assert model.merge.in_channels == model.left.out_channels + model.right.out_channels + 4


def test_grouped_and_depthwise_convs():
    model = GroupedNet()
    check_equivalent(model, _x())
    assert model.gconv.groups == 4 and model.gconv.in_channels == 8
    assert model.gconv.out_channels == 8 and model.gconv.weight.shape == (8, 2, 3, 3)
    assert model.dw.groups == model.dw.in_channels == model.dw.out_channels == 8
    assert model.pw.in_channels == 8


@pytest.mark.parametrize("index_gate", [False, True])
def test_squeeze_excitation_gate_is_coupled_with_features(index_gate):
    model = SENet(index_gate)
    group = _group_of(model, "conv", _x())
    assert {"conv", "bn", "fc1", "fc2", "conv2"} <= set(group.modules)
    check_equivalent(model, _x())
    assert model.conv.out_channels == model.fc2.out_features == model.fc1.in_features == 8
    assert model.fc1.out_features == 2  # the bottleneck is a group of its own


def test_module_reused_twice_couples_its_input_and_output():
    model = ReuseNet()
    groups = [g for g in build_groups(model, _x()) if g.prunable]
    assert len(groups) == 1 and set(groups[0].modules) == {"stem", "shared", "head"}
    check_equivalent(model, _x())
    assert model.shared.in_channels == model.shared.out_channels == model.stem.out_channels == 4


def test_flatten_to_linear_maps_each_channel_to_hw_features():
    model = FlattenNet()
    check_equivalent(model, _x())
    assert model.conv.out_channels == 3 and model.fc1.in_features == 3 * 144
    assert model.fc2.out_features == 3  # model output always kept


def test_torch_spellings_of_functional_ops_are_followed_like_F():
    class TorchPool(FlattenNet):
        def forward(self, x):  # torch.max_pool2d is a different object from F.max_pool2d
            x = torch.max_pool2d(torch.relu(self.conv(x)), 2)
            x = torch.dropout(x, 0.0, self.training)
            return self.fc2(torch.relu(self.fc1(x.view(x.size(0), -1))))

    model = TorchPool()
    check_equivalent(model, _x())
    assert model.conv.out_channels == 3 and model.fc1.in_features == 3 * 144


def test_normalize_over_channels_is_followed():
    class Embed(nn.Module):  # sentence-transformers style: pooled, then L2-normalized
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            h = F.normalize(torch.relu(self.conv(x)).mean((2, 3)), dim=-1)
            return self.fc(h)

    model = Embed()
    check_equivalent(model, _x())
    assert model.conv.out_channels == 4 and model.fc.in_features == 4


def test_literal_view_size_fixes_channels():
    class Literal(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 26 * 26, 2)

        def forward(self, x):
            return self.fc(self.conv(x).view(-1, 4 * 26 * 26))

    assert StructuredPruner(Literal(), _x(1)).groups() == []


def test_unsupported_op_raises_before_any_edit_and_exclude_is_the_way_out():
    class Weird(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)
            self.conv2 = nn.Conv2d(8, 4, 3)

        def forward(self, x):
            return self.conv2(torch.cumsum(self.conv(x), dim=1))

    model = Weird()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedModelError, match="cumsum.*Supported"):
        StructuredPruner(model, _x(1)).prune()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert _sizes(model)["conv.weight"] == (8, 1, 3, 3)
    # excluding the layer leaves nothing to prune: an error, or a warning with strict=False
    with pytest.raises(UnsupportedModelError, match="no prunable groups"):
        StructuredPruner(model, _x(1), StructuredPruning(exclude=("conv",))).prune()
    with pytest.warns(UserWarning, match="no prunable groups"):
        cfg = StructuredPruning(exclude=("conv",), strict=False)
        summary = StructuredPruner(model, _x(1), cfg).prune()
    assert model.conv.out_channels == 8 and summary.groups == []
    # strict=False keeps the channels reaching cumsum and says so
    with pytest.warns(UserWarning, match="cumsum"):
        summary = StructuredPruner(model, _x(1), StructuredPruning(strict=False)).prune()
    assert model.conv.out_channels == 8 and any("cumsum" in s for s in summary.skipped)


def test_unknown_module_names_the_module():
    class WithLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.rnn = nn.GRUCell(6, 5)

        def forward(self, x):
            return self.rnn(self.fc(x))

    with pytest.raises(UnsupportedModelError, match="module 'rnn' \\(GRUCell\\)"):
        DependencyGraph(WithLSTM(), torch.randn(2, 4))


def test_model_fx_cannot_trace_is_traced_eagerly():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            y = self.conv(x) if x.sum() > 0 else self.conv(-x)
            return self.head(y.mean((2, 3)))

    model = Branchy()
    graph = DependencyGraph(model, _x(1))
    assert graph.tracer == "eager"
    check_equivalent(model, _x(1))
    assert model.conv.out_channels == 2 == model.head.in_features


def test_model_failing_on_its_inputs_gives_clear_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    with pytest.raises(UnsupportedModelError, match="failed on example_inputs.*Pass the inputs"):
        StructuredPruner(model, _x(1)).groups()


def test_model_output_and_inputs_are_fixed():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 5, 3))
    graph = DependencyGraph(model, torch.randn(1, 3, 8, 8))
    in0, out0, in2, out2 = graph.edits
    assert all(graph.is_fixed(label) for label in in0.labels + out2.labels)
    assert not any(graph.is_fixed(label) for label in out0.labels)
    assert [graph.find(a) for a in out0.labels] == [graph.find(b) for b in in2.labels]


def test_graph_leaves_training_mode_and_stats_untouched():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).train()
    stats = model[1].running_mean.clone()
    DependencyGraph(model, torch.randn(2, 1, 8, 8))
    assert model.training and model[1].training
    assert torch.equal(model[1].running_mean, stats)


def test_layer_and_group_norm_stay_valid():
    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.gn = nn.GroupNorm(4, 8)
            self.fc = nn.Linear(8, 6)
            self.ln = nn.LayerNorm(6)
            self.out = nn.Linear(6, 2)

        def forward(self, x):
            x = torch.relu(self.gn(self.conv(x))).mean((2, 3))
            return self.out(torch.relu(self.ln(self.fc(x))))

    model = Norms()
    StructuredPruner(model, _x(), StructuredPruning(ratio=0.5)).prune()
    assert model.gn.num_channels == 4 and model.gn.num_groups == 4
    assert model.ln.normalized_shape == (3,) and model.out.in_features == 3
    assert model(_x()).shape == (2, 2)


def test_zero_pad_shortcut_couples_input_with_first_outputs():
    from nnshrink.models.resnet import ZeroPadShortcut

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = nn.Conv2d(1, 4, 3, padding=1)
            self.conv = nn.Conv2d(4, 8, 3, stride=2, padding=1)
            self.short = ZeroPadShortcut(4, 8, 2)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            x = torch.relu(self.conv_in(x))
            return self.head((self.conv(x) + self.short(x)).mean((2, 3)))

    model = Block()
    check_equivalent(model, _x())
    assert model.short.out_channels == model.conv.out_channels == 4
    assert model.short.in_channels == model.conv_in.out_channels == model.conv.in_channels
