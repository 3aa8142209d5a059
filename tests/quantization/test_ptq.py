import copy

import pytest
import torch

import nnshrink as ns
from nnshrink.core import Config
from nnshrink.quantization.backends.fake import QuantizedLayer
from nnshrink.quantization.ptq import PTQ, PTQResult, calibration_batches, prepare, quantize_ptq


def sqnr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    ref, out = ref.detach(), out.detach()
    return float(10 * torch.log10(ref.pow(2).mean() / (ref - out).pow(2).mean()))


def _batches(n=3, shape=(8, 1, 28, 28)):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g) for _ in range(n)]


def test_config_round_trip_and_validation():
    cfg = PTQ(bits=6, observer="kl", per_channel=False, calibration_batches=3)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "ptq", "backend": "onnxruntime"}).backend == "onnxruntime"
    with pytest.raises(ns.ConfigError, match="bits"):
        PTQ(bits=9)
    with pytest.raises(ns.ConfigError, match="bits=8"):
        PTQ(bits=4, backend="onnxruntime")
    with pytest.raises(ns.ConfigError):
        Config.from_dict({"type": "ptq", "observer": "median"})
    with pytest.raises(ns.ConfigError, match="calibration_batches"):
        PTQ(calibration_batches=0)


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile", "mse", "kl"])
def test_fake_backend_close_to_fp32(tiny_convnet, observer):
    model = tiny_convnet.eval()
    batches = _batches()
    ref = model(batches[0])
    result = ns.compress_(model, PTQ(observer=observer), example_inputs=batches).summary
    assert isinstance(result, PTQResult) and result.model is model  # in place
    assert result.calibration_batches == 3
    assert sqnr_db(ref, model(batches[0])) > 25
    layers = [m for m in model.modules() if isinstance(m, QuantizedLayer)]
    assert len(layers) == 3 and all(q.weight_q.dtype == torch.int8 for q in layers)
    assert all(q.layer.weight is None for q in layers)  # float weights are gone


def test_fake_backend_error_grows_as_bits_shrink(tiny_convnet):
    batches = _batches()
    ref = tiny_convnet.eval()(batches[0])
    scores = []
    for bits in (8, 6, 4, 2):
        res = quantize_ptq(
            copy.deepcopy(tiny_convnet), PTQ(bits=bits, observer="percentile"), batches
        )
        scores.append(sqnr_db(ref, res.model(batches[0])))
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 30


def test_three_step_api_and_filter(tiny_convnet):
    batches = _batches()
    cal = prepare(tiny_convnet, PTQ(), batches[0], filter_fn=lambda m, name: name != "fc")
    assert cal.calibrate(batches) == 3
    model = cal.convert()
    assert isinstance(model.conv1, QuantizedLayer) and isinstance(model.fc, torch.nn.Linear)
    assert [r["name"] for r in cal.rows()] == ["conv1", "conv2"]


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
    res = quantize_ptq(tiny_convnet, PTQ(calibration_batches=2), _batches(5))
    assert res.calibration_batches == 2
