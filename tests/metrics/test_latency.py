"""Latency measurement in eager PyTorch and ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

from nnshrink.metrics import forward_call, measure_latency, time_callable
from nnshrink.metrics.latency import summarize
from nnshrink.models import create


def test_summary_statistics():
    stats = summarize([1.0, 2.0, 3.0, 4.0, 100.0], "eager", 1, 1)
    assert stats.median_ms == 3.0
    assert stats.min_ms == 1.0
    assert stats.p10_ms < stats.median_ms < stats.p90_ms


def test_time_callable_counts_runs():
    calls = []
    times = time_callable(lambda: calls.append(1), warmup=3, runs=7)
    assert len(times) == 7 and len(calls) == 10 and all(t >= 0 for t in times)


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_measures_both_runtimes(runtime):
    model = create("lenet5").train()
    stats = measure_latency(model, torch.zeros(4, 1, 28, 28), runtime=runtime, threads=1,
                            warmup=2, runs=5)  # fmt: skip
    assert stats.runtime == runtime and stats.batch_size == 4 and stats.runs == 5
    assert 0 < stats.min_ms <= stats.median_ms
    assert model.training, "mode must be restored"


def test_threads_restored_and_bad_runtime():
    before = torch.get_num_threads()
    measure_latency(create("lenet300"), torch.zeros(1, 1, 28, 28), threads=1, warmup=1, runs=2)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="unknown runtime"):
        measure_latency(create("lenet300"), torch.zeros(1, 784), runtime="tvm")


def test_interleaved_times_every_callable_in_shuffled_rounds():
    from nnshrink.metrics.latency import interleaved

    order: list[str] = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    stats = interleaved(fns, rounds=6, runs=2, warmup=1, seed=0)
    assert set(stats) == set("abc") and all(0 <= s["p10"] <= s["median"] for s in stats.values())
    assert {k: order.count(k) for k in "abc"} == {k: 1 + 6 * 2 for k in "abc"}
    timed = order[3:]  # after the warm-up calls
    firsts = {timed[i * 6] for i in range(6)}  # the first callable of each round
    assert len(firsts) > 1  # the order is shuffled between rounds


def test_forward_call_runs_the_model_in_each_runtime():
    from nnshrink.metrics.latency import forward_call

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 4)
    expected = model(x)
    assert torch.equal(forward_call(model, x)(), expected)
    (ort_out,) = forward_call(model, x, runtime="onnxruntime", threads=1)()
    assert torch.allclose(torch.from_numpy(ort_out), expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown runtime"):
        forward_call(model, x, runtime="tvm")


@pytest.mark.parametrize("stop", [False, True])
def test_ort_session_can_park_its_workers_after_each_run(stop):
    from nnshrink.export.onnx import export_onnx
    from nnshrink.metrics.latency import ort_session

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()).eval()
    x = torch.randn(2, 4)
    session = ort_session(export_onnx(model, (x,)), threads=2, stop_spinning=stop)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    entry = options.get_session_config_entry("session.force_spinning_stop") if stop else None
    assert entry == ("1" if stop else None)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-6)  # same numbers either way


@pytest.mark.parametrize("stop", [False, True])
def test_forward_call_passes_stop_spinning_to_the_session(stop, monkeypatch):
    import nnshrink.metrics.latency as latency

    seen = []
    real = latency.ort_session

    def recording(onnx_bytes, threads, *, stop_spinning=False):
        seen.append(stop_spinning)
        return real(onnx_bytes, threads, stop_spinning=stop_spinning)

    monkeypatch.setattr(latency, "ort_session", recording)
    model = torch.nn.Linear(4, 3).eval()
    x = torch.randn(2, 4)
    (out,) = latency.forward_call(model, x, runtime="onnxruntime", threads=1, stop_spinning=stop)()
    assert seen == [stop]
    assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-6)


@pytest.mark.parametrize("runtime", ["eager-bf16", "compile"])
def test_precision_and_compiled_runtimes_run_the_model(runtime):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    x = torch.randn(2, 8)
    out = forward_call(model, x, runtime=runtime)()
    assert out.shape == (2, 8)
    if runtime == "eager-bf16":
        assert out.dtype == torch.bfloat16 and next(model.parameters()).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_latency_is_synchronized():
    model = torch.nn.Linear(4096, 4096).cuda().eval()
    x = torch.randn(256, 4096, device="cuda")
    stats = measure_latency(model, x, runs=5, warmup=2)
    # an unsynchronized launch returns in microseconds; 256x4096x4096 MACs take far longer
    assert stats.median_ms > 0.05
