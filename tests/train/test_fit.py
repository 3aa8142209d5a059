"""Training loop: learns, is deterministic, resumes exactly, calls callbacks in order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.data import TensorLoader
from nnshrink.train import Callback, evaluate, fit, make_optimizer, make_schedule


def _toy_data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return x, y


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def test_fit_learns_a_separable_problem():
    x, y = _toy_data()
    model = _model()
    loader = TensorLoader(x, y, 32, shuffle=True)
    history = fit(model, loader, epochs=5, lr=0.1, val_loader=TensorLoader(x, y, 64))
    assert len(history.epochs) == 5
    assert history.last["val_top1"] > 0.9
    assert evaluate(model, TensorLoader(x, y, 64))["top1"] == history.last["val_top1"]


def test_fit_is_deterministic():
    x, y = _toy_data()
    weights = []
    for _ in range(2):
        model = _model()
        fit(model, TensorLoader(x, y, 32, shuffle=True), epochs=2, lr=0.1, seed=7)
        weights.append(model[1].weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_resume_matches_uninterrupted(tmp_path):
    x, y = _toy_data()
    ref = _model()
    fit(ref, TensorLoader(x, y, 32, shuffle=True), epochs=3, lr=0.1, seed=1)

    class Stop(Callback):
        def on_epoch_end(self, model, epoch, metrics):
            if epoch == 1:
                raise KeyboardInterrupt

    ckpt = tmp_path / "state.pt"
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        fit(model, TensorLoader(x, y, 32, shuffle=True), epochs=3, lr=0.1, seed=1,
            checkpoint=ckpt, callbacks=[Stop()])  # fmt: skip
    assert ckpt.is_file()  # epoch 0 finished and was saved before the interrupt
    model = _model()
    history = fit(model, TensorLoader(x, y, 32, shuffle=True), epochs=3, lr=0.1, seed=1,
                  checkpoint=ckpt, resume=True)  # fmt: skip
    assert [e["epoch"] for e in history.epochs] == [1, 2, 3]
    torch.testing.assert_close(model[1].weight, ref[1].weight, rtol=0, atol=1e-6)


def test_callback_order():
    events = []

    class Recorder(Callback):
        def on_train_begin(self, model, optimizer):
            events.append("begin")

        def on_after_backward(self, model):
            assert model[1].weight.grad is not None
            events.append("backward")

        def on_step_end(self, model, step):
            events.append(f"step{step}")

        def on_epoch_end(self, model, epoch, metrics):
            events.append(f"epoch{epoch}")

        def on_train_end(self, model):
            events.append("end")

    x, y = _toy_data(64)
    fit(_model(), TensorLoader(x, y, 32), epochs=1, callbacks=[Recorder()])
    assert events == ["begin", "backward", "step0", "backward", "step1", "epoch0", "end"]


def test_custom_criterion_and_divergence_error():
    x, y = _toy_data(64)
    calls = []

    def criterion(model, xb, yb):
        calls.append(len(yb))
        logits = model(xb)
        return nn.functional.cross_entropy(logits, yb), logits

    fit(_model(), TensorLoader(x, y, 32), epochs=1, criterion=criterion)
    assert calls == [32, 32]

    def bad(model, xb, yb):
        logits = model(xb)
        return logits.sum() * float("nan"), logits

    with pytest.raises(FloatingPointError, match="lower the LR"):
        fit(_model(), TensorLoader(x, y, 32), epochs=1, criterion=bad)


def test_optimizer_and_schedule_builders():
    params = list(_model().parameters())
    assert isinstance(make_optimizer(params, "adamw", 1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer(params, "lion")
    opt = make_optimizer(params, "sgd", 1.0)
    sched = make_schedule(opt, "cosine", 10)
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule(opt, "warm", 10)


def test_resume_reads_tensors_only(tmp_path):
    """A crafted state file (a pickle that calls os.system) is refused, not executed."""
    import os
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    ckpt = tmp_path / "state.pt"
    ckpt.write_bytes(pickle.dumps({"model": Boom()}, protocol=2))
    x, y = _toy_data(64)
    with pytest.raises(ValueError, match="not a training state.*resume=False"):
        fit(_model(), TensorLoader(x, y, 32), epochs=1, checkpoint=ckpt, resume=True)
    assert not (tmp_path / "pwned").exists()
