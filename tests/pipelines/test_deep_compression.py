"""Deep Compression pipeline: the file is what it claims, the loaded model is what was trained."""

from __future__ import annotations

import pytest
import torch

from nnshrink.core import ConfigError
from nnshrink.data import TensorLoader
from nnshrink.models import create
from nnshrink.pipelines import DeepCompression, deep_compress
from nnshrink.storage import load


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g)
    y = (x[:, 0, :14].mean((1, 2)) > 0).long()
    return TensorLoader(x, y, 64, shuffle=True), TensorLoader(x, y, 128)


def test_pipeline_sparsity_codebook_and_file(tmp_path):
    train, test = _data()
    model = create("lenet300")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DeepCompression(sparsity=0.9, per_layer={"5": 0.5}, prune_rounds=2, retrain_epochs=1,
                          fc_bits=4, share_epochs=1)  # fmt: skip
    result = deep_compress(model, train, test, tmp_path / "m.nns", cfg, progress=False,
                           log=lambda s: None)  # fmt: skip
    # the caller's model is untouched
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    loaded = result.model
    w1, w3, w5 = (loaded[i].weight for i in (1, 3, 5))
    assert float((w1 == 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    assert float((w5 == 0).float().mean()) == pytest.approx(0.5, abs=0.01)
    for w in (w1, w3, w5):  # 4-bit sharing: at most 16 distinct non-zero values per layer
        assert torch.unique(w[w != 0]).numel() <= 16
    # the file is exactly what the result reports, and it reloads to the same model
    assert result.file_bytes == (tmp_path / "m.nns").stat().st_size
    again = load(tmp_path / "m.nns")
    for k, v in again.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    assert result.compression_ratio > 8 and result.paper_ratio >= result.compression_ratio
    d = result.to_dict()
    assert set(d) >= {"top1", "compression_ratio", "file_bytes", "dense_bytes"}
    assert d["top1"]["after"] == result.stages[-1]["top1"]
    assert [s["stage"] for s in result.stages][:2] == ["dense", "pruned"]
    assert "| total |" in result.to_markdown()


def test_config_validation():
    with pytest.raises(ConfigError, match="sparsity"):
        DeepCompression(sparsity=1.0)
    with pytest.raises(ConfigError, match="fc_bits"):
        DeepCompression(fc_bits=9)
    cfg = DeepCompression(per_layer={"5": 0.7})
    assert DeepCompression.from_dict(cfg.to_dict()) == cfg


def test_last_round_uses_final_epochs_and_weight_decay(tmp_path, monkeypatch):
    import nnshrink.pipelines.deep_compression as dc

    calls = []
    monkeypatch.setattr(dc, "fit", lambda m, loader, **kw: calls.append(kw))
    train, test = _data(64)
    cfg = DeepCompression(sparsity=0.5, prune_rounds=3, retrain_epochs=1, final_epochs=4,
                          weight_decay=1e-4, share_epochs=0)  # fmt: skip
    deep_compress(create("lenet300"), train, test, tmp_path / "m.nns", cfg, progress=False,
                  log=lambda s: None)  # fmt: skip
    assert [c["epochs"] for c in calls] == [1, 1, 4]
    assert all(c["weight_decay"] == 1e-4 for c in calls)
    with pytest.raises(ConfigError, match="epochs"):
        DeepCompression(final_epochs=-1)
    with pytest.raises(ConfigError, match="weight_decay"):
        DeepCompression(weight_decay=-0.1)
    assert DeepCompression.from_dict(cfg.to_dict()) == cfg
