import copy
import warnings

import pytest
import torch

import nnshrink as ns
from nnshrink.core import Config
from nnshrink.quantization.backends.fake import QuantizedLayer
from nnshrink.quantization.ptq import (
    PTQ,
    PTQSummary,
    calibration_batches,
    prepare,
    quantize_ptq,
)


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.detach(), out.detach()
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()))


def _batches(n=3, shape=(8, 1, 28, 28)):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def test_config_round_trip_and_validation():
    cfg = PTQ(bits=6, observer="kl", per_channel=False, calibration_batches=3, backend="fake")
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "ptq", "backend": "onnxruntime"}).backend == "onnxruntime"
    cfg = PTQ(mode="weight-only", bits=4, exclude=("@last",), per_layer={"fc1": 8})
    assert Config.from_dict(cfg.to_dict()) == cfg and cfg.resolved_group_size() == 32
    with pytest.raises(ns.ConfigError, match="bits"):
        PTQ(bits=9)
    with pytest.raises(ns.ConfigError, match="bits=8"):
        PTQ(bits=4, backend="onnxruntime")
    with pytest.raises(ns.ConfigError, match="bits=8"):
        PTQ(bits=4)  # the default backend runs int8 kernels: simulation is asked for
    with pytest.raises(ns.ConfigError):
        Config.from_dict({"type": "ptq", "observer": "median"})
    with pytest.raises(ns.ConfigError, match="calibration_batches"):
        PTQ(calibration_batches=0)
    with pytest.raises(ns.ConfigError, match="does not run mode='dynamic'"):
        PTQ(mode="dynamic", backend="torch-fx")
    with pytest.raises(ns.ConfigError, match="8 and 4 bits"):
        PTQ(mode="weight-only", bits=6)
    with pytest.raises(ns.ConfigError, match="per channel: use group_size=0"):
        PTQ(mode="weight-only", group_size=32)
    with pytest.raises(ns.ConfigError, match="MatMulNBits"):
        PTQ(mode="weight-only", bits=4, backend="onnxruntime", group_size=48)
    with pytest.raises(ns.ConfigError, match="applies to mode"):
        PTQ(group_size=32)
    with pytest.raises(ns.ConfigError, match="batch_sizes"):
        PTQ(batch_sizes=(0,))
    with pytest.raises(ns.ConfigError, match="unknown token"):
        PTQ(exclude=("@middle",))


def test_defaults_are_real_int8():
    cfg = PTQ()
    assert (cfg.mode, cfg.backend, cfg.bits) == ("static", "auto", 8)


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile", "mse", "kl"])
def test_fake_backend_close_to_fp32(tiny_convnet, observer):
    model = tiny_convnet.eval()
    batches = _batches()
    ref = model(batches[0])
    result = ns.compress_(model, PTQ(observer=observer, backend="fake"), example_inputs=batches)
    summary = result.summary
    assert isinstance(summary, PTQSummary) and result.artifact is None
    assert summary.calibration_batches == 3 and summary.runtime == "fake"
    assert sqnr_db(ref, model(batches[0])) > 25  # the model itself was edited
    layers = [m for m in model.modules() if isinstance(m, QuantizedLayer)]
    assert len(layers) == 3 and all(q.weight_q.dtype == torch.int8 for q in layers)
    assert all(q.layer.weight is None for q in layers)  # float weights are gone


def test_fake_backend_error_grows_as_bits_shrink(tiny_convnet):
    batches = _batches()
    ref = tiny_convnet.eval()(batches[0])
    scores = []
    for bits in (8, 6, 4, 2):
        model = copy.deepcopy(tiny_convnet)
        ns.compress_(model, PTQ(bits=bits, observer="percentile", backend="fake"),
                     example_inputs=batches)  # fmt: skip
        scores.append(sqnr_db(ref, model(batches[0])))
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 30


def test_layer_selection_and_per_layer_bits(tiny_convnet):
    cfg = PTQ(backend="fake", bits=8, exclude=("@last",), per_layer={"conv2": 4})
    result = ns.compress_(tiny_convnet, cfg, example_inputs=_batches())
    bits = {row["name"]: row["bits"] for row in result.summary.layers}
    assert bits == {"conv1": 8, "conv2": 4}
    assert isinstance(tiny_convnet.fc, torch.nn.Linear)
    assert "fc" in result.summary.skipped


def test_three_step_api_and_filter(tiny_convnet):
    batches = _batches()
    cal = prepare(tiny_convnet, PTQ(backend="fake"), batches[0], lambda m, name: name != "fc")
    assert cal.calibrate(batches) == 3
    model = cal.convert()
    assert isinstance(model.conv1, QuantizedLayer) and isinstance(model.fc, torch.nn.Linear)
    assert [r["name"] for r in cal.rows()] == ["conv1", "conv2"]
    with pytest.raises(ns.ConfigError, match="one runtime"):
        prepare(tiny_convnet, PTQ(), batches[0])


def test_calibration_batches_normalisation():
    x = torch.zeros(2, 3)
    assert len(calibration_batches(x)) == 1
    assert len(calibration_batches([x, x, x])) == 3
    assert calibration_batches([(x, x)])[0] == (x, x)
    loader = [(x, torch.zeros(2, dtype=torch.long))] * 2
    assert all(len(b) == 1 for b in calibration_batches(iter(loader)))
    with pytest.raises(ValueError, match="calibration data"):
        calibration_batches(None)


def test_calibration_batches_limit(tiny_convnet):
    result = ns.compress_(
        tiny_convnet, PTQ(calibration_batches=2, backend="fake"), example_inputs=_batches(5)
    )
    assert result.summary.calibration_batches == 2


def test_summary_has_no_model_and_old_names_warn(tiny_convnet):
    batches = _batches(1)
    fresh = copy.deepcopy(tiny_convnet)
    result = ns.compress_(tiny_convnet, PTQ(backend="fake"), example_inputs=batches)
    with pytest.raises(AttributeError, match="in place"):
        _ = result.summary.model
    assert result.rows == result.summary.layers  # the old PTQResult field, via the summary
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from nnshrink.quantization.ptq import PTQResult

        legacy = quantize_ptq(fresh, PTQ(backend="fake"), batches)
    assert PTQResult is PTQSummary
    assert all(issubclass(w.category, DeprecationWarning) for w in caught) and len(caught) == 2
    assert isinstance(legacy.model.conv1, QuantizedLayer) and legacy.runtime == "fake"


def test_failure_leaves_model_bit_identical(tiny_convnet):
    before = {k: v.clone() for k, v in tiny_convnet.state_dict().items()}
    bn = tiny_convnet.bn1
    with pytest.raises(ns.ConfigError, match="per_layer"):
        ns.compress_(tiny_convnet, PTQ(per_layer={"conv2": 4}), example_inputs=_batches(1))
    assert tiny_convnet.bn1 is bn  # BN folding was undone
    after = tiny_convnet.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
