"""Whole-model LowRank handler on zoo models: MACs drop, the model runs, rows are reported.

Per-layer rank planning is tested in test_planning.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnshrink.core import Config, ConfigError, compress_
from nnshrink.lowrank import LowRank
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create


def test_config_round_trip_and_validation():
    configs = [
        LowRank(),
        LowRank(method="cp", rank="budget", macs_ratio=0.3, linear=True, include=("a.b", "c")),
        LowRank(method="svd", rank="evbmf", tucker_method="hooi", n_iter_max=7, seed=3),
        LowRank(round_to=16),
        LowRank(method="cp", cp_fuse_spatial=True),
        LowRank(cp_fallback=True, cp_fuse_spatial=True, round_to=16),
        LowRank(rank="params", params_ratio=0.3),
        LowRank(method="cp", rank="budget", budget_on="params", params_ratio=0.2),
    ]
    for cfg in configs:
        assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "low-rank", "energy": 1}) == LowRank(energy=1.0)
    with pytest.raises(ConfigError, match="energy"):
        LowRank(energy=1.5)
    with pytest.raises(ConfigError, match="round_to"):
        LowRank(round_to=0)
    with pytest.raises(ConfigError, match="cp_fuse_spatial applies to CP layers"):
        LowRank(method="tucker", cp_fuse_spatial=True)
    with pytest.raises(ConfigError, match="cp_fallback applies to method='tucker'"):
        LowRank(method="cp", cp_fallback=True)
    assert LowRank(cp_fallback=True, cp_fuse_spatial=True).cp_fuse_spatial
    with pytest.raises(ConfigError, match="budget_on applies to rank='budget'"):
        LowRank(rank="macs", budget_on="params")
    with pytest.raises(ConfigError, match="params_ratio"):
        LowRank(rank="params", params_ratio=0)
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "low-rank", "method": "qr"})


@pytest.mark.parametrize("method", ["tucker", "cp"])
def test_resnet20_macs_really_drop_and_model_runs(method):
    model = create("resnet20", in_channels=3, input_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    macs_before = count_macs(model, x)
    cfg = LowRank(method=method, rank="macs", macs_ratio=0.5, n_iter_max=1)
    report = compress_(model, cfg, example_inputs=x).summary
    assert len(report.decomposed) == 19  # every 3x3 conv; stem has 3 input channels
    for row in report.decomposed:
        assert row.macs_after <= 0.5 * row.macs_before
        assert row.params_after < row.params_before
        assert 0.0 <= row.rel_error < 1.0
        assert isinstance(model.get_submodule(row.name), nn.Sequential)
    totals = report.to_dict()
    saved = totals["macs_before"] - totals["macs_after"]
    assert count_macs(model, x) == macs_before - saved  # the rows' MACs are the real ones
    assert model(x).shape == (2, 10)
    for module in model.modules():
        assert type(module) in (
            nn.Conv2d,
            nn.Linear,
            nn.BatchNorm2d,
            nn.ReLU,
            nn.Sequential,
            nn.Identity,
            nn.AdaptiveAvgPool2d,
            nn.Flatten,
        ) or type(module).__module__.startswith("nnshrink.models")


def test_cp_fuse_spatial_builds_three_convs_with_the_same_function():
    """Oracle: the four-conv CP model from the same ALS run (same seed, same factors)."""
    torch.manual_seed(0)
    dense = create("resnet20", in_channels=3, input_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    models, reports = {}, {}
    for fuse in (False, True):
        models[fuse] = copy.deepcopy(dense)
        cfg = LowRank(method="cp", rank="ratio", ratio=0.5, n_iter_max=2, cp_fuse_spatial=fuse)
        reports[fuse] = compress_(models[fuse], cfg, example_inputs=x).summary
    for row in reports[True].decomposed:
        seq = models[True].get_submodule(row.name)
        assert [m.groups > 1 for m in seq] == [False, True, False]
        assert seq[1].kernel_size == (3, 3)
    # the same ranks; the fused layout counts kh*kw instead of kh + kw MACs per rank and pixel
    assert [r.ranks for r in reports[True].decomposed] == [
        r.ranks for r in reports[False].decomposed
    ]
    totals = reports[True].to_dict()
    assert count_macs(models[True], x) == count_macs(dense, x) - (
        totals["macs_before"] - totals["macs_after"]
    )
    assert totals["macs_after"] > reports[False].to_dict()["macs_after"]
    assert count_params(models[True]) == count_params(dense) - (
        totals["params_before"] - totals["params_after"]
    )
    with torch.no_grad():
        torch.testing.assert_close(models[True](x), models[False](x), atol=1e-4, rtol=1e-4)


def _not_stem(module: nn.Module, name: str) -> bool:
    return not (isinstance(module, nn.Conv2d) and module.in_channels <= 3)


def test_cp_fallback_decomposes_by_cp_what_tucker_cannot_cut():
    """Oracle: Tucker-2 first, then fused CP on the layers it left dense, as two passes."""
    torch.manual_seed(0)
    dense = create("resnet20", in_channels=3, input_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    tucker = dict(method="tucker", rank="macs", macs_ratio=0.5, round_to=16, n_iter_max=2)
    cp = dict(method="cp", rank="macs", macs_ratio=0.5, round_to=16, n_iter_max=2,
              cp_fuse_spatial=True)  # fmt: skip
    one_pass = copy.deepcopy(dense)
    report = compress_(one_pass, LowRank(**tucker, cp_fallback=True, cp_fuse_spatial=True),
                       example_inputs=x, filter_fn=_not_stem).summary  # fmt: skip
    two_pass = copy.deepcopy(dense)
    first = compress_(two_pass, LowRank(**tucker), example_inputs=x,
                      filter_fn=_not_stem).summary  # fmt: skip
    left = tuple(r.name for r in first.skipped if "would not reduce MACs" in r.note)
    assert left and all(n.startswith("layer1.") for n in left)  # the 16-channel stage
    second = compress_(two_pass, LowRank(**cp, include=left), example_inputs=x).summary
    by_name = {r.name: r for r in report.decomposed}
    assert {n for n, r in by_name.items() if r.method == "cp"} == set(left)
    assert all(r.method == "tucker" for n, r in by_name.items() if n not in left)
    expected = {r.name: r.ranks for r in first.decomposed + second.decomposed}
    assert {n: r.ranks for n, r in by_name.items()} == expected
    assert all(by_name[n].ranks[0] % 16 == 0 for n in left)
    assert count_macs(one_pass, x) == count_macs(two_pass, x)
    totals = report.to_dict()
    assert count_macs(one_pass, x) == count_macs(dense, x) - (
        totals["macs_before"] - totals["macs_after"]
    )
    with torch.no_grad():
        torch.testing.assert_close(one_pass(x), two_pass(x), atol=1e-5, rtol=1e-5)
    # the whole-model budget spreads over the fallback layers too
    budget = copy.deepcopy(dense)
    rep = compress_(budget, LowRank(**{**tucker, "rank": "budget"}, cp_fallback=True),
                    example_inputs=x, filter_fn=_not_stem)  # fmt: skip
    t = rep.summary.to_dict()
    assert t["macs_after"] <= 0.5 * sum(r.macs_before for r in rep.rows if r.macs_before)
    assert any(r.method == "cp" for r in rep.decomposed)


def test_full_rank_tucker_keeps_the_function():
    model = create("resnet20", in_channels=1, input_size=16).eval()
    x = torch.randn(2, 1, 16, 16)
    ref = model(x)
    compress_(model, LowRank(method="tucker", rank="ratio", ratio=1.0), example_inputs=x)
    # full-rank Tucker-2 of a 3x3 conv costs more MACs, so everything is skipped
    torch.testing.assert_close(model(x), ref)
    model2 = copy.deepcopy(model)
    report = compress_(model2, LowRank(method="svd", rank="ratio", ratio=1.0), example_inputs=x)
    assert report.skipped and not report.decomposed


def test_vgg16_tucker_and_linear_svd():
    model = create("vgg16", in_channels=3, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    params = count_params(model)
    # the 512-channel convs are left out only to keep the test fast (their HOSVD costs ~10 s)
    report = compress_(
        model,
        LowRank(method="tucker", rank="ratio", ratio=0.25, linear=True),
        example_inputs=x,
        filter_fn=lambda m, n: not (isinstance(m, nn.Conv2d) and m.out_channels == 512),
    )
    names = {r.name for r in report.decomposed}
    assert "features.3" in names and "classifier" in names
    assert all(r.macs_after < r.macs_before for r in report.decomposed)
    assert count_params(model) < params
    assert model(x).shape == (1, 10)
    assert "| layer |" in report.to_markdown()


def test_budget_meets_the_overall_target():
    model = create("resnet20", in_channels=3, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    report = compress_(
        model, LowRank(method="tucker", rank="budget", macs_ratio=0.4), example_inputs=x
    )
    rows = [r for r in report.rows if r.macs_before > 0]
    before = sum(r.macs_before for r in rows)
    after = sum(r.macs_after for r in rows)
    assert after <= 0.4 * before
    assert report.decomposed


@pytest.mark.parametrize("method", ["tucker", "cp"])
def test_params_rule_caps_each_layer_and_the_budget_caps_the_total(method):
    torch.manual_seed(0)
    dense = create("resnet20", in_channels=3, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    per_layer = copy.deepcopy(dense)
    cfg = LowRank(method=method, rank="params", params_ratio=0.3, n_iter_max=2, linear=True)
    report = compress_(per_layer, cfg, example_inputs=x)
    assert report.decomposed
    for r in report.decomposed:
        assert r.params_after <= 0.3 * r.params_before, r.name
    saved = sum(r.params_before - r.params_after for r in report.decomposed)
    assert count_params(per_layer) == count_params(dense) - saved  # oracle: the counter
    whole = copy.deepcopy(dense)
    cfg = LowRank(method=method, rank="budget", budget_on="params", params_ratio=0.4,
                  n_iter_max=2)  # fmt: skip
    report = compress_(whole, cfg, example_inputs=x)
    rows = [r for r in report.rows if r.macs_before > 0]
    assert sum(r.params_after for r in rows) <= 0.4 * sum(r.params_before for r in rows)
    saved = sum(r.params_before - r.params_after for r in report.decomposed)
    assert count_params(whole) == count_params(dense) - saved


def test_evbmf_on_trained_like_low_rank_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(80, 100), nn.ReLU(), nn.Linear(100, 4))
    g = torch.Generator().manual_seed(0)
    low = torch.randn(100, 7, generator=g) @ torch.randn(7, 80, generator=g)
    with torch.no_grad():
        model[1].weight.copy_(low + 0.1 * torch.randn(100, 80, generator=g))
    report = compress_(
        model,
        LowRank(method="svd", rank="evbmf", include=("1",)),
        example_inputs=torch.randn(1, 80),
    )
    assert report.decomposed[0].ranks == (7,)
    assert model[1][0].out_features == 7


def test_depthwise_skipped_with_message_and_error_when_named(tiny_convnet):
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.Conv2d(16, 16, 1),
    )
    x = torch.randn(1, 8, 8, 8)
    report = compress_(
        copy.deepcopy(model), LowRank(method="tucker", rank="ratio", ratio=0.25), example_inputs=x
    )
    notes = {r.name: r.note for r in report.rows}
    assert "depthwise" in notes["0"] and "1x1" in notes["2"] and notes["1"] == ""
    with pytest.raises(ConfigError, match="depthwise"):
        compress_(model, LowRank(include=("0",)), example_inputs=x)
    with pytest.raises(ConfigError, match="not a submodule"):
        compress_(model, LowRank(include=("9",)), example_inputs=x)
    with pytest.raises(ConfigError, match="method='svd' decomposes nn.Linear"):
        compress_(model, LowRank(method="svd", include=("1",)), example_inputs=x)
    assert type(model[1]) is nn.Conv2d  # nothing was edited on failure


def test_filter_fn_and_missing_inputs(tiny_convnet):
    x = torch.randn(1, 1, 12, 12)
    report = compress_(
        tiny_convnet,
        LowRank(method="tucker", rank="ratio", ratio=0.5),
        example_inputs=x,
        filter_fn=lambda m, n: n == "conv2",
    )
    assert [r.name for r in report.decomposed] == ["conv2"]
    assert isinstance(tiny_convnet.conv2, nn.Sequential)
    with pytest.raises(ValueError, match="example_inputs"):
        compress_(tiny_convnet, LowRank())


@pytest.mark.parametrize("method", ["cp", "tucker"])
def test_decomposed_model_exports_to_onnx(tiny_convnet, method):
    import numpy as np

    from nnshrink.export.onnx import export_onnx
    from nnshrink.metrics.latency import ort_session

    x = torch.randn(2, 1, 12, 12)
    compress_(tiny_convnet, LowRank(method=method, rank="ratio", ratio=0.5, n_iter_max=2),
              example_inputs=x)  # fmt: skip
    tiny_convnet.eval()
    session = ort_session(export_onnx(tiny_convnet, x), threads=1)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, tiny_convnet(x).detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "rank"),
    [("tucker", "macs"), ("tucker", "budget"), ("tucker", "energy"), ("cp", "macs"),
     ("svd", "macs")],
)  # fmt: skip
def test_round_to_gives_rank_multiples_and_keeps_the_mac_target(method, rank):
    torch.manual_seed(0)
    model = create("vgg16", in_channels=3, input_size=32).eval()
    x = torch.randn(1, 3, 32, 32)
    cfg = LowRank(method=method, rank=rank, macs_ratio=0.5, energy=0.5, round_to=16,
                  n_iter_max=2)  # fmt: skip
    kwargs = {"filter_fn": lambda m, n: not (isinstance(m, nn.Conv2d) and m.in_channels <= 3)}
    if method == "svd":
        model = nn.Sequential(nn.Flatten(), nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
        x, kwargs = torch.randn(1, 300), {}
    reference = copy.deepcopy(model)
    report = compress_(model, cfg, example_inputs=x, **kwargs)
    assert report.decomposed
    for row in report.decomposed:
        assert all(r % 16 == 0 for r in row.ranks), row
    rows = [r for r in report.rows if r.macs_before > 0]
    if rank == "macs":  # every layer within its own target, with the rounded ranks
        assert all(r.macs_after <= 0.5 * r.macs_before for r in report.decomposed)
    if rank == "budget":
        assert sum(r.macs_after for r in rows) <= 0.5 * sum(r.macs_before for r in rows)
    assert model(x).shape == reference(x).shape


def test_round_to_caps_ranks_at_the_channel_count():
    # a 16-channel layer cannot take a rank-32 factor: ranks are capped, and a layer whose
    # rounded ranks would not reduce MACs is kept dense with a message
    model = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3))
    report = compress_(model, LowRank(method="tucker", rank="ratio", ratio=0.5, round_to=32),
                       example_inputs=torch.randn(1, 16, 8, 8))  # fmt: skip
    for row in report.rows:
        assert row.ranks in ((), (16, 16), (24, 16))
        assert not row.decomposed or row.macs_after < row.macs_before


@pytest.mark.parametrize("rank", ["macs", "budget"])
def test_tucker_keeps_a_full_rank_mode_whole_when_that_is_more_accurate(rank):
    # a kernel whose input mode has rank 4 but whose output mode is full: cutting both modes in
    # proportion at half the MACs loses output directions, keeping the output mode whole and
    # folding it into the core is exact
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(
            torch.einsum("oryx,ir->oiyx", torch.randn(32, 4, 3, 3), torch.randn(32, 4))
        )
    model = nn.Sequential(conv)
    reference = copy.deepcopy(model)
    x = torch.randn(2, 32, 8, 8)
    report = compress_(model, LowRank(method="tucker", rank=rank, macs_ratio=0.5),
                       example_inputs=x)  # fmt: skip
    (row,) = report.decomposed
    assert row.ranks[0] == 32 and row.ranks[1] >= 4
    assert row.macs_after <= 0.5 * row.macs_before
    assert len(model[0]) == 2  # 1x1 (32 → R_in), then the core with the output factor folded in
    assert row.rel_error < 1e-6
    torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
