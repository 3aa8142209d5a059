"""Deep Compression pipeline: the file is what it claims, the loaded model is what was trained."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.data import TensorLoader
from nnshrink.models import create
from nnshrink.pipelines import DeepCompression, DeepCompressionSummary, deep_compress
from nnshrink.storage import load
from tests.conftest import needs_mnist


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x[:, 0, :14].mean((1, 2)) > 0).long()
    return TensorLoader(x, y, 64, shuffle=True), TensorLoader(x, y, 128)


QUICK = dict(prune_rounds=2, retrain_epochs=1, final_epochs=None, fc_bits=4, share_epochs=1)


class UserNet(nn.Module):
    """A model that is not in the zoo: files cannot rebuild it by name."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU())
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        return self.head(self.body(x))


def test_pipeline_sparsity_codebook_and_file(tmp_path):
    train, test = _data(128)
    model = create("lenet300")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DeepCompression(sparsity=0.9, **QUICK)
    assert cfg.per_layer == {"@last": 0.75}  # the default: the output layer is pruned less
    result = deep_compress(model, train, test, tmp_path / "m.nns", cfg, progress=False,
                           log=lambda s: None)  # fmt: skip
    # the caller's model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    loaded = result.model
    w1, w3, w5 = (loaded[i].weight for i in (1, 3, 5))
    assert float((w1 == 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    assert float((w5 == 0).float().mean()) == pytest.approx(0.75, abs=0.01)
    for w in (w1, w3, w5):  # 4-bit sharing: at most 16 distinct non-zero values per layer
        assert torch.unique(w[w != 0]).numel() <= 16
    # the file is exactly what the result reports, and it reloads to the same model
    assert result.file_bytes == (tmp_path / "m.nns").stat().st_size
    again = load(tmp_path / "m.nns")
    for k, v in again.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert result.compression_ratio > 8 and result.paper_ratio >= result.compression_ratio
    d = result.to_dict()
    assert set(d) >= {"top1", "compression_ratio", "file_bytes", "dense_bytes", "path"}
    assert d["top1"]["after"] == result.stages[-1]["top1"]
    assert [s["stage"] for s in result.stages][:2] == ["dense", "pruned"]
    assert "| total |" in result.to_markdown()


def test_a_users_own_module_round_trips_through_the_file(tmp_path):
    train, test = _data(128)
    model = UserNet()
    result = deep_compress(model, train, test, tmp_path / "user.nns", DeepCompression(**QUICK),
                           progress=False, log=lambda s: None)  # fmt: skip
    assert type(result.model) is UserNet and result.model is not model
    x = torch.randn(3, 1, 28, 28)
    fresh = load(tmp_path / "user.nns", model=UserNet())  # the file fills the user's class
    torch.testing.assert_close(fresh(x), result.model(x), rtol=0, atol=0)
    assert float((fresh.body[1].weight == 0).float().mean()) == pytest.approx(0.94, abs=0.005)


def test_handler_edits_in_place_and_measures_what_ns_save_writes(tmp_path):
    train, test = _data(128)
    model = UserNet()
    cfg = DeepCompression(**QUICK)
    result = ns.compress_(model, cfg, example_inputs={"train": train, "test": test})
    summary = result.summary
    assert isinstance(summary, DeepCompressionSummary)
    assert type(model.body[1]) is nn.Linear  # final form: plain layers holding shared values
    assert torch.unique(model.body[1].weight[model.body[1].weight != 0]).numel() <= 16
    assert result.after["nonzero_params"] < 0.1 * result.before["nonzero_params"]
    assert summary.stages[0]["top1"] is not None and summary.compression_ratio > 8
    # ns.save with the config's save options writes exactly the measured bytes
    ns.save(model, tmp_path / "m.nns", **cfg.save_kwargs())
    assert (tmp_path / "m.nns").stat().st_size == summary.file_bytes
    # the training data alone is enough (no accuracy then)
    alone = ns.compress_(UserNet(), cfg, example_inputs=train).summary
    assert all(s["top1"] is None for s in alone.stages)


def test_handler_needs_data_and_leaves_the_model_bit_identical_on_failure():
    model = UserNet()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="training data"):
        ns.compress_(model, DeepCompression(), example_inputs=torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="'train'"):
        ns.compress_(model, DeepCompression(), example_inputs={"test": []})
    nan = TensorLoader(torch.full((64, 1, 28, 28), float("nan")), torch.zeros(64).long(), 32)
    with pytest.raises(FloatingPointError):
        ns.compress_(model, DeepCompression(**QUICK), example_inputs=nan)
    assert type(model.body[1]) is nn.Linear
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(name.endswith("_mask") for name, _ in model.named_buffers())


def test_config_validation():
    with pytest.raises(ConfigError, match="sparsity"):
        DeepCompression(sparsity=1.0)
    with pytest.raises(ConfigError, match="sparsity"):
        DeepCompression(per_layer={"@last": 1.2})
    with pytest.raises(ConfigError, match="fc_bits"):
        DeepCompression(fc_bits=9)
    with pytest.raises(ConfigError, match="unknown token"):
        DeepCompression(per_layer={"@lst": 0.5})
    cfg = DeepCompression(per_layer={"5": 0.7}, exclude=("@first",))
    assert DeepCompression.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "deep-compression"}) == DeepCompression()


def test_last_round_uses_final_epochs_and_weight_decay(tmp_path, monkeypatch):
    import nnshrink.pipelines.deep_compression as dc

    calls = []
    monkeypatch.setattr(dc, "fit", lambda m, loader, **kw: calls.append(kw))
    train, test = _data(64)
    cfg = DeepCompression(sparsity=0.5, prune_rounds=3, retrain_epochs=1, final_epochs=4,
                          weight_decay=1e-4, share_epochs=0)  # fmt: skip
    deep_compress(UserNet(), train, test, tmp_path / "m.nns", cfg, progress=False,
                  log=lambda s: None)  # fmt: skip
    assert [c["epochs"] for c in calls] == [1, 1, 4]
    assert all(c["weight_decay"] == 1e-4 for c in calls)
    with pytest.raises(ConfigError, match="epochs"):
        DeepCompression(final_epochs=-1)
    with pytest.raises(ConfigError, match="weight_decay"):
        DeepCompression(weight_decay=-0.1)
    assert DeepCompression.from_dict(cfg.to_dict()) == cfg


@needs_mnist
@pytest.mark.slow
def test_defaults_reach_40x_within_a_tenth_of_a_point_on_a_3_epoch_lenet300(tmp_path):
    # the protocol of issue 23.4: `nnshrink train --model lenet300 --epochs 3` (Adam 2e-3,
    # batch 128), then deep_compress with DeepCompression() as it comes (the CLI's defaults)
    torch.manual_seed(0)
    model = create("lenet300")
    ns.train.fit(model, ns.data.loader("mnist", "train", 128, train=True), epochs=3, lr=2e-3,
                 optimizer="adam", weight_decay=0.0, progress=False)  # fmt: skip
    train = ns.data.loader("mnist", "train", 64, train=True)
    test = ns.data.loader("mnist", "test", 1000)
    result = deep_compress(model, train, test, tmp_path / "lenet300.nns", progress=False,
                           log=lambda s: None)  # fmt: skip
    before, after = result.stages[0]["top1"], result.stages[-1]["top1"]
    assert result.compression_ratio >= 40, result.to_markdown()
    # whole test errors (0.01 pt each): at most 10 more of the 10,000 test images wrong
    assert round(10_000 * (1 - after)) - round(10_000 * (1 - before)) <= 10, (before, after)


@pytest.fixture(autouse=True)
def _one_thread():
    # training-heavy tests: one thread is several times faster than two on a loaded machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
