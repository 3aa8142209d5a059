import math

import numpy as np
import pytest
import torch

from nnshrink.quantization.observers import (
    KLObserver,
    MinMaxObserver,
    MovingAverageObserver,
    hist_quantile,
    kl_threshold,
    make_observer,
    mse_range,
    rebin_np,
)
from nnshrink.quantization.primitives import fake_quantize


def _quant_mse(obs, x):
    scale, zp = obs.qparams()
    return float((fake_quantize(x, scale, zp, obs.bits, obs.symmetric) - x).pow(2).mean())


def test_minmax_exact_on_uniform():
    obs = MinMaxObserver()
    batches = [torch.rand(1000) * 4 - 1 for _ in range(3)]
    for b in batches:
        obs.update(b)
    allx = torch.cat(batches)
    lo, hi = obs.range()
    assert float(lo) == float(allx.min()) and float(hi) == float(allx.max())


def test_minmax_per_channel():
    x = torch.randn(2, 5, 4)
    obs = make_observer("minmax", axis=1)
    obs.update(x)
    lo, hi = obs.range()
    assert torch.equal(lo, x.transpose(0, 1).reshape(5, -1).min(1).values)
    assert torch.equal(hi, x.transpose(0, 1).reshape(5, -1).max(1).values)


def test_moving_average_formula():
    obs = MovingAverageObserver(averaging_constant=0.5)
    obs.update(torch.tensor([0.0, 2.0]))
    obs.update(torch.tensor([-2.0, 4.0]))
    lo, hi = obs.range()
    assert float(lo) == -1.0 and float(hi) == 3.0


def test_percentile_close_to_analytic_quantile():
    torch.manual_seed(0)
    obs = make_observer("percentile", percentile=99.9)
    for _ in range(4):  # the range grows across batches: histogram re-binning is exercised
        obs.update(torch.randn(50_000))
    lo, hi = obs.range()
    z = 3.0902  # Phi^-1(0.999)
    assert abs(float(hi) - z) < 0.08 and abs(float(lo) + z) < 0.08
    uni = make_observer("percentile", percentile=99.0)
    uni.update(torch.rand(100_000) * 10)
    assert abs(float(uni.range()[1]) - 9.9) < 0.05


def test_mse_beats_minmax_on_heavy_tails():
    torch.manual_seed(0)
    laplace = torch.distributions.Laplace(0.0, 1.0).sample((50_000,))
    student = torch.distributions.StudentT(4.0).sample((50_000,))
    for bits, x in [(8, laplace), (6, laplace), (4, laplace), (6, student), (4, student)]:
        mm, mse = make_observer("minmax", bits=bits), make_observer("mse", bits=bits)
        mm.update(x)
        mse.update(x)
        assert _quant_mse(mse, x) < _quant_mse(mm, x)


def test_kl_clips_outliers_but_keeps_the_bulk():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(100_000), torch.tensor([40.0, -35.0])])
    obs = KLObserver(bits=8)
    obs.update(x)
    lo, hi = obs.range()
    assert 2.5 < float(hi) < 20 and -20 < float(lo) < -2.5
    mm = make_observer("minmax")
    mm.update(x)
    bulk = x[:-2]  # the error on the two outliers is what clipping trades away
    assert _quant_mse(obs, bulk) < _quant_mse(mm, bulk) / 10


def test_kl_ignores_relu_zero_spike():
    torch.manual_seed(0)
    x = torch.relu(torch.randn(100_000))
    obs = make_observer("kl", bits=8)
    obs.update(x)
    assert float(obs.range()[1]) > 3.0  # without zero exclusion the spike pulls it to ~2


@pytest.mark.parametrize("name", ["minmax", "moving_average", "percentile", "mse", "kl"])
def test_every_observer_gives_valid_qparams(name):
    obs = make_observer(name, bits=6)
    obs.update(torch.randn(4, 100))
    scale, zp = obs.qparams()
    assert float(scale) > 0 and 0 <= int(zp) <= 63


def test_observer_errors():
    with pytest.raises(ValueError, match="unknown observer"):
        make_observer("median")
    with pytest.raises(ValueError, match="per-tensor only"):
        make_observer("kl", axis=0)
    with pytest.raises(RuntimeError, match="no data"):
        make_observer("mse").range()


def test_pure_histogram_functions():
    hist = np.ones(100)
    assert abs(hist_quantile(hist, 0.0, 1.0, 0.5) - 0.5) < 1e-9
    moved = rebin_np(hist, 0.0, 1.0, -1.0, 1.0)
    assert abs(moved.sum() - 100) < 1e-9 and moved[:50].sum() < 1e-9
    # uniform data: clipping only hurts, both searches keep (nearly) the full range
    assert mse_range(hist, 0.0, 1.0, 8, False)[1] > 0.95
    assert kl_threshold(np.ones(2048), 1.0, 128) > 0.9
    assert math.isclose(kl_threshold(np.zeros(2048), 2.0, 128), 2.0)
