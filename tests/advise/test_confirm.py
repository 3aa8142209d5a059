"""Re-timing the advisor's choice: artifacts load back, both calls park ORT, judged again."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import nnshrink.advise.confirm as confirm_mod
from nnshrink.advise import Budget, Candidate, Evaluation, Measurement, judge
from nnshrink.advise.confirm import confirm, load_artifact, retime
from nnshrink.io import save_checkpoint
from nnshrink.models import create

SHAPE = (1, 4, 4)
X = torch.randn(2, *SHAPE)  # the first batch of the data: the timed calls take their samples


def _mlp(width: int) -> nn.Module:
    torch.manual_seed(0)  # a zoo model, so that its checkpoint rebuilds without model=
    return create("mlp", input_size=4, widths=(width,))


def _evaluation(tmp_path, name: str, width: int, budget: Budget, score: float = 0.9) -> Evaluation:
    path = save_checkpoint(_mlp(width), tmp_path / f"{name}.safetensors")
    m = Measurement(score=score, bytes=path.stat().st_size, latency_ms=0.01)
    return Evaluation(Candidate(name, "f", ()), 0, None, m, seconds=0.0, artifact=str(path),
                      **judge(budget, m, 0.9))  # fmt: skip


def test_load_artifact_gives_back_the_saved_model(tmp_path):
    budget = Budget(max_latency_ms=1.0)
    ev = _evaluation(tmp_path, "small", 8, budget)
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(load_artifact(ev, budget)(x), _mlp(8)(x))


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_retime_scales_the_baseline_latency_by_the_measured_ratio(tmp_path, monkeypatch, runtime):
    budget = Budget(max_latency_ms=1.0, threads=1, runtime=runtime)
    built = []
    real = confirm_mod.deployed_call

    def recording(model, budget, example, *, stop_spinning=False):
        built.append(stop_spinning)
        return real(model, budget, example, stop_spinning=stop_spinning)

    monkeypatch.setattr(confirm_mod, "deployed_call", recording)
    monkeypatch.setattr(confirm_mod, "RETIME_ROUNDS", 2)
    monkeypatch.setattr(confirm_mod, "RETIME_RUNS", 5)
    baseline = Measurement(score=0.9, latency_ms=2.0)
    lines = []
    ev = retime(_evaluation(tmp_path, "small", 8, budget), _mlp(256), baseline, budget, X,
                lines.append)  # fmt: skip
    assert built == [True, True]  # both sessions park their workers between calls
    assert ev.retimed_ratio > 0
    assert ev.measurement.latency_ms == pytest.approx(ev.retimed_ratio * 2.0)
    assert ev.meets == (ev.measurement.latency_ms <= 1.0)
    assert lines and "re-timed small@r0" in lines[0]


def test_confirm_retimes_until_a_choice_still_meets(tmp_path, monkeypatch):
    budget = Budget(max_latency_ms=1.0, max_drop=0.5)
    best = _evaluation(tmp_path, "best", 8, budget, score=0.95)
    second = _evaluation(tmp_path, "second", 8, budget, score=0.93)
    calls = []

    def fake_retime(evaluation, baseline_model, baseline, budget, example, say, **_):
        calls.append(evaluation.candidate.name)
        slow = evaluation.candidate.name == "best"  # the most accurate fails its re-timing
        m = Measurement(score=evaluation.measurement.score, bytes=evaluation.measurement.bytes,
                        latency_ms=5.0 if slow else 0.5)  # fmt: skip
        return dataclasses.replace(evaluation, measurement=m, retimed_ratio=1.0,
                                   **judge(budget, m, 0.9))  # fmt: skip

    monkeypatch.setattr(confirm_mod, "retime", fake_retime)
    out = confirm([best, second], _mlp(8), Measurement(score=0.9, latency_ms=1.0), budget, X,
                  print)  # fmt: skip
    assert calls == ["best", "second"]  # each re-timed once, then the loop stops
    assert [e.meets for e in out] == [False, True]
    assert all(e.retimed_ratio == 1.0 for e in out)


def test_load_artifact_names_the_factory_instead_of_trusting_the_file(tmp_path):
    from nnshrink.io.record import UntrustedCodeError
    from nnshrink.models import from_reference

    model = from_reference("tests.usercode:make_model", {"width": 4})
    path = save_checkpoint(model, tmp_path / "f.safetensors")
    m = Measurement(score=0.9, bytes=path.stat().st_size)
    ev = Evaluation(Candidate("f", "f", ()), 0, None, m, [], True, 0.0, artifact=str(path))
    with pytest.raises((UntrustedCodeError, ValueError), match="tests.usercode:make_model"):
        load_artifact(ev, Budget(max_bytes=1))
    x = torch.randn(2, 1, 12, 12)
    loaded = load_artifact(ev, Budget(max_bytes=1), factory="tests.usercode:make_model")
    torch.testing.assert_close(loaded(x), model.eval()(x))
