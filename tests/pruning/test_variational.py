import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnshrink as ns
from nnshrink.core import Config, ConfigError
from nnshrink.data import TensorLoader
from nnshrink.pruning.variational import (
    ELBO,
    VariationalConv2d,
    VariationalDropout,
    VariationalLinear,
    kl_divergence,
    kl_log_uniform,
    train_variational,
    variational_sparsity,
)


def test_kl_approximation_matches_a_monte_carlo_estimate():
    # KL(N(t, a t^2) || log-uniform) = C - log(a)/2 + E[log|1 + sqrt(a) e|], e ~ N(0, 1); C makes
    # it vanish as a -> inf: C = -E[log|e|] = (euler_gamma + log 2) / 2 (Molchanov et al., eq. 14)
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(400_000, generator=g, dtype=torch.float64)
    c = (0.5772156649 + math.log(2)) / 2
    for log_alpha in (-4.0, -2.0, 0.0, 2.0, 4.0):
        mc = c - log_alpha / 2 + torch.log((1 + math.exp(log_alpha / 2) * eps).abs()).mean()
        approx = float(kl_log_uniform(torch.tensor(log_alpha, dtype=torch.float64)))
        assert approx == pytest.approx(float(mc), abs=0.015), log_alpha


def _noisy_layer(layer):
    with torch.no_grad():  # log alpha uniform in (-6, -1): noisy, but every weight kept
        log_alpha = torch.empty_like(layer.weight).uniform_(-6, -1)
        layer.log_sigma2.copy_(log_alpha + layer.weight.square().log())
    return layer


def test_local_reparametrisation_has_the_moments_of_weight_noise():
    layer = _noisy_layer(VariationalLinear(6, 3)).train()
    x = torch.randn(1, 6).expand(50_000, 6)
    out = layer(x)
    mean = F.linear(x[:1], layer.weight, layer.bias)[0]
    var = F.linear(x[:1].square(), layer.log_sigma2.exp())[0]
    # oracle: sample the weights themselves, w = theta + sigma * e
    w = layer.weight + layer.log_sigma2.exp().sqrt() * torch.randn(20_000, 3, 6)
    sampled = torch.einsum("noi,i->no", w, x[0]) + layer.bias
    for got in (out, sampled):
        torch.testing.assert_close(got.mean(0), mean, atol=0.02, rtol=0)
        torch.testing.assert_close(got.var(0), var, rtol=0.05, atol=1e-4)


def test_conv_training_forward_moments_and_eval_uses_sparse_weight():
    layer = _noisy_layer(VariationalConv2d(2, 3, 3, padding=1)).train()
    x = torch.randn(1, 2, 5, 5).expand(4000, 2, 5, 5)
    out = layer(x)
    mean = F.conv2d(x[:1], layer.weight, layer.bias, padding=1)[0]
    var = F.conv2d(x[:1].square(), layer.log_sigma2.exp(), padding=1)[0]
    torch.testing.assert_close(out.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(out.var(0), var, rtol=0.15, atol=1e-3)
    with torch.no_grad():
        layer.log_sigma2[0] = 5.0  # filter 0: log alpha far above the threshold
    layer.eval()
    keep = layer.keep_mask()
    assert not keep[0].any() and keep[1:].all()
    expected = F.conv2d(x[:1], layer.weight * keep, layer.bias, padding=1)
    torch.testing.assert_close(layer(x[:1]), expected)


def test_handler_keeps_the_trained_function_and_finalize_makes_plain_sparse_layers():
    model = ns.models.create("lenet5")
    dense = copy.deepcopy(model).eval()
    rows = ns.compress_(model, VariationalDropout(exclude=("@last",)))
    assert [r.name for r in rows] == ["features.0", "features.2", "classifier.1"]
    assert isinstance(model.features[0], VariationalConv2d)
    assert type(model.classifier[3]) is nn.Linear
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model.eval()(x), dense(x))  # capped init: nothing dropped yet
    log_alpha = model.classifier[1].log_alpha()
    assert log_alpha.max() <= 2.0 + 1e-4 and log_alpha.min() < -3  # paper's -10, capped
    with torch.no_grad():
        model.classifier[1].log_sigma2[:250] = 2.0  # half of fc1's rows now carry only noise
    expected = model(x)
    assert variational_sparsity(model) == pytest.approx(250 * 800 / (500 + 25_000 + 400_000))
    assert ns.finalize(model) == {"variational-dropout": ["features.0", "features.2",
                                                          "classifier.1"]}  # fmt: skip
    assert type(model.classifier[1]) is nn.Linear and "log_sigma2" not in str(model.state_dict())
    assert int((model.classifier[1].weight == 0).sum()) == 250 * 800
    torch.testing.assert_close(model(x), expected)


def test_elbo_adds_the_ramped_kl_per_sample_only_in_training():
    model = nn.Sequential(VariationalLinear(4, 3))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    criterion = ELBO(num_samples=1000, kl_weight=0.5, warmup_steps=4)
    model.eval()
    loss, logits = criterion(model, x, y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    assert criterion.steps == 0  # evaluation does not advance the ramp
    model.train()
    criterion(model, x, y)  # step 0: weight 0
    torch.manual_seed(1)
    loss, logits = criterion(model, x, y)  # step 1: weight 0.5 * 1/4
    expected = F.cross_entropy(logits, y) + 0.125 * kl_divergence(model) / 1000
    torch.testing.assert_close(loss, expected)
    assert criterion.current_weight() == 0.25
    with pytest.raises(ValueError, match="num_samples"):
        ELBO(num_samples=0)


def _task(n=512, features=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=g)
    y = (x[:, :4].sum(1) > 0).long()  # only the first 4 of 32 features matter
    return TensorLoader(x.reshape(n, 1, 1, features), y, 64, shuffle=True)


def test_training_removes_the_weights_the_data_does_not_need():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 2))
    data = _task()
    ns.train.fit(model, data, epochs=5, lr=0.05, progress=False)
    top1 = ns.train.evaluate(model, data)["top1"]
    ns.compress_(model, VariationalDropout())
    out = train_variational(model, data, epochs=20, lr=0.02, warmup_epochs=2, num_samples=512)
    assert len(out["history"]) == 20
    assert out["sparsity"] > 0.8, out["sparsity"]  # most of the 32 x 16 + 16 x 2 weights go
    ns.finalize(model)
    kept = (model[1].weight != 0).float()
    # the informative features keep their weights (in the hidden units that survive), the
    # noise features lose nearly all of theirs
    assert kept[:, :4].mean() > 0.3 and kept[:, 4:].mean() < 0.1, kept.mean(0)
    assert ns.train.evaluate(model, data)["top1"] >= top1


def test_train_variational_errors_and_all_or_nothing():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 4))
    with pytest.raises(ValueError, match="VariationalDropout"):
        train_variational(model, _task(64, 784), epochs=1)
    ns.compress_(model, VariationalDropout())
    before = copy.deepcopy(model.state_dict())
    nan = TensorLoader(torch.full((64, 1, 28, 28), float("nan")), torch.zeros(64).long(), 32)
    with pytest.raises(FloatingPointError):
        train_variational(model, nan, epochs=1)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_config_round_trip_validation_and_per_layer_threshold():
    cfg = VariationalDropout(threshold=2.5, per_layer={"@last": 4.0}, exclude=("@first",))
    assert Config.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="init_log_sigma2"):
        VariationalDropout(init_log_sigma2=1.0)
    model = ns.models.create("lenet300")
    rows = ns.compress_(model, cfg)
    assert [(r.name, r.threshold) for r in rows] == [("3", 2.5), ("5", 4.0)]
    assert model[5].threshold == 4.0 and type(model[1]) is nn.Linear
    with pytest.raises(ValueError, match="no nn.Linear"):
        ns.compress_(nn.Sequential(nn.ReLU()), VariationalDropout())


def test_checkpoint_rebuilds_variational_layers_and_represented_params(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = ns.models.create("lenet300")
    ns.compress_(model, VariationalDropout(threshold=3.5))
    with torch.no_grad():
        model[1].log_sigma2[:10] = 3.0  # log alpha > 3 for weights below e^0 = 1: all of them
    loaded, _ = load_checkpoint(save_checkpoint(model, tmp_path / "vd.safetensors"))
    assert isinstance(loaded[1], VariationalLinear) and loaded[1].threshold == 3.5
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
    counts = model[1].represented_params()
    assert counts["params"] == 784 * 300 + 300  # log sigma^2 is not counted
    assert counts["nonzero_params"] == 784 * 290 + int((model[1].bias != 0).sum())


@pytest.fixture(autouse=True)
def _one_thread():
    # training-heavy tests: one thread is several times faster than two on a loaded machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
