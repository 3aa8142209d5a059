"""Depth pruning (nnshrink/pruning/depth.py): block finding, ranking, removal, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnshrink import compress_, models
from nnshrink.core import Config, ConfigError
from nnshrink.pruning import BlockPruning, residual_blocks
from nnshrink.pruning.depth import residual_ratio

IDENTITY_BLOCKS = [f"layer1.{i}" for i in range(3)] + [
    f"layer{s}.{i}" for s in (2, 3) for i in (1, 2)
]


class FunctionalAdd(nn.Module):
    """y = torch.add(f(x), x): a residual block written with a function, not an operator."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(6, 6)

    def forward(self, x):
        return torch.add(self.f(x), x)


class Widen(nn.Module):
    """Adds its input but changes the shape afterwards: not removable."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Linear(6, 6)
        self.g = nn.Linear(6, 3)

    def forward(self, x):
        return self.g(self.f(x) + x)


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = FunctionalAdd()
        self.b = Widen()

    def forward(self, x):
        return self.b(self.a(x))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_identity_blocks_found(shortcut):
    model = models.create("resnet20", in_channels=1, input_size=28, shortcut=shortcut)
    # the three down-sampling blocks (layer2.0, layer3.0 and none in layer1) are never candidates
    assert residual_blocks(model, torch.zeros(2, 1, 28, 28)) == IDENTITY_BLOCKS


def test_functional_add_found_shape_change_rejected():
    assert residual_blocks(Mixed(), torch.zeros(2, 6)) == ["a"]


def test_mobilenetv2_inverted_residuals_found():
    model = models.create("mobilenetv2", in_channels=1, input_size=28)
    blocks = residual_blocks(model, torch.zeros(1, 1, 28, 28))
    assert blocks  # the stride-1, same-width blocks
    mods = dict(model.named_modules())
    assert all(getattr(mods[b], "use_residual", True) for b in blocks)


def test_zeroed_branch_removed_first_and_output_unchanged():
    """Oracle: a block whose branch is zeroed is an identity on post-ReLU input, so removing it
    must leave the model's output exactly as it was."""
    model = models.create("resnet20", in_channels=1, input_size=28).eval()
    with torch.no_grad():
        model.layer2[2].bn2.weight.zero_()
        model.layer2[2].bn2.bias.zero_()
    x = torch.randn(4, 1, 28, 28)
    before = model(x)
    result = compress_(model, BlockPruning(remove=1), example_inputs=x)
    assert result.removed == ["layer2.2"]
    assert isinstance(model.layer2[2], nn.Identity)
    assert torch.allclose(model(x), before, atol=1e-6)
    row = {r.name: r for r in result.blocks}["layer2.2"]
    assert row.importance == pytest.approx(0.0, abs=1e-7)


def test_removal_shrinks_params_and_macs_and_keeps_the_model_running():
    model = models.create("resnet20", in_channels=1, input_size=28)
    x = torch.randn(4, 1, 28, 28)
    result = compress_(model, BlockPruning(ratio=0.5), example_inputs=x)
    assert len(result.removed) == 3  # int(0.5 * 7)
    assert result.params_after < result.params_before
    assert result.macs_after < result.macs_before
    assert result.params_after == sum(p.numel() for p in model.parameters())
    assert model(x).shape == (4, 10)
    removed_params = sum(r.params for r in result.blocks if r.removed)
    assert result.params_before - result.params_after == removed_params


def test_ranking_follows_residual_ratio():
    model = models.create("resnet20", in_channels=1, input_size=28)
    x = torch.randn(4, 1, 28, 28)
    result = compress_(copy.deepcopy(model), BlockPruning(remove=2), example_inputs=x)
    by_score = sorted(result.blocks, key=lambda r: r.importance)
    assert set(result.removed) == {by_score[0].name, by_score[1].name}


def test_residual_ratio_oracle():
    x = torch.randn(10)
    assert residual_ratio(x, x) == 0.0
    assert residual_ratio(x, 2 * x) == pytest.approx(1.0)


def test_random_criterion_is_seeded_and_filters_apply():
    def removed(seed):
        model = models.create("resnet20", in_channels=1, input_size=28)
        cfg = BlockPruning(remove=2, criterion="random", seed=seed, exclude=(r"^layer1",))
        return compress_(model, cfg, example_inputs=torch.zeros(1, 1, 28, 28)).removed

    assert removed(3) == removed(3)
    assert not any(n.startswith("layer1") for n in removed(3))


def test_errors_name_the_fix():
    model = models.create("lenet5")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="only 0 removable"):
        compress_(model, BlockPruning(remove=1), example_inputs=torch.zeros(1, 1, 28, 28))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="example_inputs"):
        compress_(model, BlockPruning(remove=0))
    with pytest.raises(ConfigError, match="not both"):
        BlockPruning(remove=1, target_macs=100)
    with pytest.raises(ConfigError, match="sparsity"):
        BlockPruning(ratio=1.5)


def test_config_round_trips_through_dict():
    cfg = BlockPruning(remove=2, exclude=("layer3",))
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "block-pruning", "ratio": 0.5}) == BlockPruning(ratio=0.5)


def test_target_macs_removes_just_enough_blocks():
    from nnshrink.metrics import count_macs

    model = models.create("resnet20", in_channels=1, input_size=28)
    x = torch.randn(8, 1, 28, 28)  # the batch ranks the blocks; MACs are per sample
    target = int(0.6 * count_macs(model, x[:1]))
    result = compress_(model, BlockPruning(target_macs=target), example_inputs=x)
    assert result.macs_after == count_macs(model, x[:1]) <= target
    # the least important blocks, and not one more than needed
    ranked = sorted(result.blocks, key=lambda r: r.importance)
    removed = [r for r in ranked if r.removed]
    assert removed == ranked[: len(removed)]
    assert result.macs_after + removed[-1].macs > target
    assert result.macs_before - result.macs_after == sum(r.macs for r in removed)
    with pytest.raises(ValueError, match="still leaves"):
        compress_(models.create("resnet20", in_channels=1, input_size=28),
                  BlockPruning(target_macs=10), example_inputs=x)  # fmt: skip
