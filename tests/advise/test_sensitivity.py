"""Per-layer sensitivity: each layer compressed alone, with the model left untouched.

Oracles: the technique's own result (k-means sharing of a layer equals the ``share`` stage's
weights); a layer whose weights are all zero cannot lose accuracy; MACs counted by hand.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnshrink.advise import measure_sensitivity
from nnshrink.advise.sensitivity import kmeans_share_weight
from nnshrink.core import compress_
from nnshrink.sharing import WeightSharing, strip_sharing


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny tensors: a second intra-op thread only adds synchronisation (and the suite shares
    # the machine's cores)
    torch.set_num_threads(1)


def test_kmeans_share_weight_equals_the_share_stage():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30))
    with torch.no_grad():
        model[0].weight[model[0].weight.abs() < 0.05] = 0
    ours = kmeans_share_weight(model[0].weight.detach(), 3)
    ref = copy.deepcopy(model)
    compress_(ref, WeightSharing(bits=3))
    assert torch.allclose(ours, strip_sharing(ref)[0].weight, atol=1e-6)
    assert torch.equal(ours == 0, model[0].weight == 0) and ours.unique().numel() <= 2**3 + 1


class _WithZeroBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 5)
        self.zero = nn.Linear(16, 5)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(self.zero.bias)

    def forward(self, x):
        x = self.flatten(x)
        return self.fc2(torch.relu(self.fc1(x))) + self.zero(x)


def _batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 1, 4, 4, generator=g), torch.randint(0, 5, (32,), generator=g))
            for _ in range(n)]  # fmt: skip


def test_a_layer_of_zeros_has_zero_sensitivity_and_the_model_is_untouched():
    torch.manual_seed(0)
    model = _WithZeroBranch()
    before = copy.deepcopy(model.state_dict())
    sens = measure_sensitivity(model, _batches(), torch.randn(8, 1, 4, 4), bits=(4, 2),
                               sparsities=(0.5, 0.9), channels=(0.25, 0.5))  # fmt: skip
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rows = {r.name: r for r in sens.layers}
    assert set(rows) == {"fc1", "fc2", "zero"} and sens.samples == 96
    assert rows["zero"].bits == {4: 0.0, 2: 0.0} and rows["zero"].sparsity == {0.5: 0.0, 0.9: 0.0}
    # fc1's channels can go (fc2 follows); output layers cannot change alone
    assert set(rows["fc1"].channels) == {0.25, 0.5} and not rows["fc2"].channels
    assert rows["fc1"].channel_macs[0.5] < rows["fc1"].channel_macs[0.25] < sens.macs
    assert sens.macs == 16 * 24 + 24 * 5 + 16 * 5 and rows["fc1"].macs == 16 * 24
    assert "| zero | 80 | 0.0 | 0.0 | 0.0 | 0.0 | - | - |" in sens.to_markdown()
    assert sens.to_dict()["layers"][0]["bits"] == {
        "4": rows["fc1"].bits[4],
        "2": rows["fc1"].bits[2],
    }


def test_drops_follow_the_users_metric_and_its_direction():
    """Oracle: an error rate is 1 - top-1, so its drops (lower is better) equal top-1's drops."""
    from nnshrink.train.task import Task
    from tests.usercode import error_rate

    torch.manual_seed(0)
    model = _WithZeroBranch()
    nn.init.normal_(model.zero.weight, std=0.3)  # every layer matters a little
    kwargs = dict(bits=(4, 2), sparsities=(0.5, 0.9), channels=(0.5,), ranks=(0.5,))
    top1 = measure_sensitivity(model, _batches(), torch.randn(8, 1, 4, 4), **kwargs)
    error = measure_sensitivity(model, _batches(), torch.randn(8, 1, 4, 4),
                                task=Task(metric=error_rate), **kwargs)  # fmt: skip
    assert error.headline == "error" and not error.higher_is_better
    assert error.baseline == pytest.approx(1 - top1.baseline)
    for a, b in zip(top1.layers, error.layers):
        for table in ("bits", "sparsity", "channels", "rank"):
            assert getattr(a, table).keys() == getattr(b, table).keys()
            for key, drop in getattr(a, table).items():
                assert getattr(b, table)[key] == pytest.approx(drop, abs=1e-12)
    assert any(d > 0 for r in error.layers for d in r.sparsity.values())
    assert "| fc1 |" in error.to_markdown() and "%" not in error.to_markdown()
