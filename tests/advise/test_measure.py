"""Measurements: zero-shot equals applying the techniques by hand; artifacts; layer time shares."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnshrink.advise import Budget, artifact_of, layer_latency_share, measure_model, zero_shot
from nnshrink.advise.measure import apply_stages, deployed_call, latency_ms
from nnshrink.core import compress_
from nnshrink.io import save_checkpoint
from nnshrink.pruning import MagnitudePruning
from nnshrink.quantization import PTQ
from nnshrink.quantization.backends.ort import OrtInt8Module
from nnshrink.sharing import WeightSharing, strip_sharing
from nnshrink.storage import save as save_nns

from ..conftest import needs_mnist

SHAPE = (1, 4, 4)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))


def _batches(n=2):
    torch.manual_seed(1)
    return [(torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))) for _ in range(n)]


STAGES = (
    {"prune": {"type": "magnitude-pruning", "sparsity": 0.8}},
    {"finetune": {"epochs": 1}},
    {"share": {"type": "weight-sharing", "bits": 3}},
    {"encode": {}},
)


def test_zero_shot_matches_the_techniques_applied_by_hand(tmp_path):
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    budget = Budget(max_bytes=10**6)
    calib = torch.randn(8, *SHAPE)
    m = zero_shot(model, STAGES, budget, calibration=calib, loader=_batches(), latency=False)
    # the user's model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # oracle: the same technique calls and the same encode call, by hand
    ref = copy.deepcopy(model)
    compress_(ref, MagnitudePruning(sparsity=0.8), example_inputs=calib)
    compress_(ref, WeightSharing(bits=3), example_inputs=calib)
    save_nns(strip_sharing(copy.deepcopy(ref)), tmp_path / "ref.nns", huffman=True,
             index_bits={"conv": 4, "fc": 5})  # fmt: skip
    assert m.bytes == (tmp_path / "ref.nns").stat().st_size and m.bytes_kind == "nns"
    ref.eval()
    with torch.no_grad():
        correct = sum(int((ref(x).argmax(1) == y).sum()) for x, y in _batches())
    assert m.score == pytest.approx(correct / 16)
    assert m.macs == 16 * 64 + 64 * 10 and m.latency_ms is None


def test_zero_shot_int8_is_an_onnx_file_and_keeps_float_macs():
    model = _mlp()
    stages = ({"quantize": PTQ(backend="onnxruntime").to_dict()},)
    out, last_float, encode = apply_stages(model, stages, torch.randn(8, *SHAPE))
    assert isinstance(out, OrtInt8Module) and encode is None
    m = zero_shot(model, stages, Budget(max_latency_ms=5.0), calibration=torch.randn(8, *SHAPE))
    assert m.bytes_kind == "int8-onnx" and m.bytes == out.size_bytes()
    assert m.macs == 16 * 64 + 64 * 10 and m.latency_ms > 0 and m.score is None


def test_measure_model_and_artifacts(tmp_path):
    model = _mlp()
    save_checkpoint(model, tmp_path / "stages" / "01-prune.safetensors")
    save_checkpoint(model, tmp_path / "stages" / "02-finetune.safetensors")
    path, kind = artifact_of(tmp_path, model)
    assert kind == "checkpoint" and path.name == "02-finetune.safetensors"
    m = measure_model(model, Budget(max_bytes=1, runtime="eager"), torch.zeros(2, *SHAPE),
                      artifact=path, bytes_kind=kind, loader=_batches(), latency=True)  # fmt: skip
    assert m.bytes == path.stat().st_size and m.latency_ms > 0 and 0 <= m.score <= 1
    (tmp_path / "model.nns").write_bytes(b"x")
    assert artifact_of(tmp_path, model)[1] == "nns"
    with pytest.raises(FileNotFoundError, match="no stage checkpoint"):
        artifact_of(tmp_path / "empty", model)


def test_int8_latency_uses_the_budget_threads():
    out, _, _ = apply_stages(_mlp(), ({"quantize": PTQ(backend="onnxruntime").to_dict()},),
                             torch.randn(8, *SHAPE))  # fmt: skip
    assert (
        latency_ms(out, Budget(max_latency_ms=1.0, threads=1), torch.zeros(1, *SHAPE), runs=3) > 0
    )
    assert out.threads == 1


@pytest.mark.parametrize("stop", [False, True])
def test_deployed_int8_call_can_park_its_workers(stop):
    out, _, _ = apply_stages(_mlp(), ({"quantize": PTQ(backend="onnxruntime").to_dict()},),
                             torch.randn(8, *SHAPE))  # fmt: skip
    budget = Budget(max_latency_ms=1.0, threads=1, batch_size=2)
    y = deployed_call(out, budget, torch.randn(1, *SHAPE), stop_spinning=stop)()
    assert tuple(y.shape) == (2, 10) and out.threads == 1
    options = out._session.get_session_options()
    entry = options.get_session_config_entry("session.force_spinning_stop") if stop else None
    assert entry == ("1" if stop else None)
    assert copy.deepcopy(out).stop_spinning is stop  # copies keep the setting


def test_layer_latency_share(tiny_convnet):
    rows = layer_latency_share(tiny_convnet, torch.zeros(1, 1, 8, 8), runs=3)
    assert {r.name for r in rows} == {"conv1", "bn1", "conv2", "bn2", "fc"}
    assert all(r.ms >= 0 for r in rows) and 0 < sum(r.share for r in rows) <= 1.0
    assert rows == sorted(rows, key=lambda r: -r.ms)
    assert tiny_convnet.training  # mode restored


@needs_mnist
def test_measure_run_of_an_int8_recipe(tmp_path):
    from nnshrink.advise import measure_run
    from nnshrink.models import create
    from nnshrink.recipes import parse_recipe, run_recipe

    save_checkpoint(create("lenet300"), tmp_path / "m.safetensors")
    recipe = parse_recipe(
        {"model": {"checkpoint": "m.safetensors"},
         "data": {"name": "mnist", "batch_size": 32, "limit": 100, "train_limit": 64},
         "measure": {"latency": False, "threads": 1},
         "stages": [{"quantize": PTQ(backend="onnxruntime").to_dict()}]},
        base_dir=tmp_path,
    )  # fmt: skip
    result = run_recipe(recipe, tmp_path / "run", progress=False, log=lambda _l: None)
    m, artifact = measure_run(result, Budget(max_bytes=1, threads=1), torch.zeros(1, 1, 28, 28))
    assert artifact.name == "model-int8.onnx" and m.bytes_kind == "int8-onnx"
    assert m.bytes == artifact.stat().st_size == result.model.size_bytes()
    assert m.macs == 266_200  # the float graph's MACs
    assert m.score == result.rows[-1]["top1"] and m.latency_ms > 0


def test_latency_is_the_best_round_and_restores_the_mode():
    budget = Budget(max_latency_ms=1.0, runtime="eager", batch_size=64, threads=1)
    small = nn.Linear(512, 8).train()
    big = nn.Sequential(*[nn.Linear(512, 512) for _ in range(8)])
    fast = latency_ms(small, budget, torch.zeros(1, 512), runs=5, rounds=3)
    slow = latency_ms(big, budget, torch.zeros(1, 512), runs=5, rounds=3)
    assert 0 < fast < slow  # ~500x the MACs
    assert small.training


def test_latency_inputs_are_real_samples_at_the_budget_batch():
    from nnshrink.advise.measure import latency_inputs

    x = torch.arange(6.0).view(3, 2)
    assert torch.equal(latency_inputs(x, 2), x[:2])
    assert torch.equal(latency_inputs(x, 5), torch.cat([x, x])[:5])  # repeated when short
    a, b = latency_inputs((x, x[:, :1]), 4)  # tuples of inputs, each cut the same way
    assert a.shape == (4, 2) and b.shape == (4, 1)


def test_zero_shot_scores_with_the_users_metric():
    """A lower-is-better metric: the zero-shot score is the metric's value, not top-1."""
    from nnshrink.train.task import Task

    def mae(model, loader):
        errs = [float((model(x) - model(x).detach()).abs().mean()) + 0.25 for x, _ in loader]
        return {"mae": sum(errs) / len(errs), "headline": "mae", "higher_is_better": False}

    task = Task(metric=mae)
    m = zero_shot(_mlp(), STAGES[:1], Budget(max_bytes=10**6), calibration=torch.randn(8, *SHAPE),
                  loader=_batches(), task=task, latency=False)  # fmt: skip
    assert m.score == pytest.approx(0.25) and task.headline == "mae" and not task.higher_is_better
