"""The shared per-layer scan: scores against a direct implementation, the caller's model kept,
both restore modes, "no change" trials, directions, and what each trial records."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from nnshrink.core.sensitivity import LayerScan, conv_linear_layers, scan_layers, task_score
from nnshrink.train.task import Task

X = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _scale(model: nn.Module, name: str, factor: float) -> bool:
    if factor == 1.0:
        return False  # nothing changes: the scan must not score it
    with torch.no_grad():
        model.get_submodule(name).weight.mul_(factor)
    return True


def _output_norm(model: nn.Module) -> float:
    with torch.no_grad():
        return float(model(X).norm())


def test_scores_equal_the_edit_applied_by_hand_and_the_model_is_kept():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    scan = scan_layers(model, _scale, (0.5, 1.0, 2.0), score=_output_norm)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert list(scan.scores) == conv_linear_layers(model) == ["0", "2"]
    assert scan.baseline == _output_norm(model)
    for name in ("0", "2"):
        for i, factor in enumerate((0.5, 1.0, 2.0)):
            if factor == 1.0:
                assert math.isnan(scan.scores[name][i])
                continue
            oracle = copy.deepcopy(model)
            _scale(oracle, name, factor)
            assert scan.scores[name][i] == pytest.approx(_output_norm(oracle), rel=1e-6)
    assert set(scan.table("2")) == {0.5, 2.0}  # the unchanged setting is left out


def test_copy_mode_takes_structural_edits_and_records_each_trial():
    def widen_out(model, name, extra):  # replaces the module: a structural edit
        old = model.get_submodule(name)
        new = nn.Linear(old.in_features, old.out_features)
        new.weight.data.copy_(old.weight * extra)
        new.bias.data.copy_(old.bias)
        setattr(model, name, new)

    model = _model()
    scan = scan_layers(model, widen_out, (0.0, 1.0), score=_output_norm, layers=["2"],
                       restore="copy", record=lambda m: m[2].weight.abs().sum().item())  # fmt: skip
    assert scan.scores["2"][1] == pytest.approx(scan.baseline)  # factor 1 reproduces the model
    assert scan.extras["2"] == (0.0, pytest.approx(model[2].weight.abs().sum().item()))
    with pytest.raises(ValueError, match="restore='copy'"):
        scan_layers(model, widen_out, (1.0,), score=_output_norm, layers=["2"])
    assert isinstance(model[2], nn.Linear) and model[2].weight.abs().sum() > 0


def test_drops_follow_the_direction_a_task_learns_from_its_first_result():
    def loss(model, loader):  # declares its direction on the returned dict
        value = sum(float(model(x).pow(2).mean()) for x, _ in loader)
        return {"loss": value, "headline": "loss", "higher_is_better": False}

    task = Task(metric=loss)
    batches = iter([(X, torch.zeros(32))])  # a one-shot iterator: task_score reads it once
    scan = scan_layers(_model(), _scale, (2.0,), score=task_score(task, batches),
                       higher_is_better=lambda: task.higher_is_better)  # fmt: skip
    assert scan.higher_is_better is False
    assert all(d[0] > 0 for d in scan.drops().values())  # doubling weights raises the loss
    assert scan.drops()["0"][0] == pytest.approx(scan.scores["0"][0] - scan.baseline)


def test_layer_scan_drops_never_read_minus_zero():
    scan = LayerScan(0.25, (1,), {"a": (0.25,)}, higher_is_better=False)
    assert str(scan.drops()["a"][0]) == "0.0"
    with pytest.raises(ValueError, match="restore"):
        scan_layers(_model(), _scale, (2.0,), score=_output_norm, restore="inplace")


def test_replayed_batches_look_like_a_dataloader_to_a_users_metric():
    """A metric reading ``len(loader.dataset)`` scores the replay exactly like the loader."""
    from torch.utils.data import DataLoader, TensorDataset

    from nnshrink.core.sensitivity import ReplayBatches, task_score
    from nnshrink.train.task import Task

    g = torch.Generator().manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(10, 4, generator=g), torch.randint(0, 2, (10,),
                        generator=g)), batch_size=4)  # fmt: skip
    replay = ReplayBatches(loader)
    assert len(replay) == len(loader) == 3 and replay.batch_size == 4
    assert len(replay.dataset) == 10
    torch.testing.assert_close(replay.dataset.tensors[0], loader.dataset.tensors[0])

    def mean_out(model, batches):  # a metric that needs the dataset's length
        total = sum(float(model(x).detach().sum()) for x, _ in batches)
        return {"mean": total / len(batches.dataset), "headline": "mean"}

    model = torch.nn.Linear(4, 1)
    assert task_score(Task(metric=mean_out), loader)(model) == pytest.approx(
        mean_out(model, loader)["mean"]
    )
