import pytest
import torch

from nnshrink.quantization.primitives import (
    dequantize,
    fake_quantize,
    lsq_fake_quantize,
    lsq_grad_scale,
    lsq_init_step,
    minmax_qparams,
    qparams_from_range,
    qrange,
    quantize,
)


def test_qrange():
    assert qrange(8, True) == (-127, 127)
    assert qrange(8, False) == (0, 255)
    assert qrange(2, True) == (-1, 1)
    assert qrange(2, False) == (0, 3)
    with pytest.raises(ValueError):
        qrange(1, True)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("axis", [None, 0])
def test_round_trip_error_at_most_half_step(bits, symmetric, axis):
    x = torch.randn(6, 5, 3) * torch.linspace(0.1, 3, 6).reshape(6, 1, 1) + 0.3
    scale, zp = minmax_qparams(x, bits, symmetric, axis)
    q = quantize(x, scale, zp, bits, symmetric, axis)
    assert q.dtype == (torch.int8 if symmetric else torch.uint8)
    qmin, qmax = qrange(bits, symmetric)
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    err = (dequantize(q, scale, zp, axis).double() - x.double()).abs()
    step = scale.double() if axis is None else scale.double().reshape(-1, 1, 1)
    assert bool((err <= step / 2 + 1e-6).all())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_matches_torch_per_tensor_affine():
    x = torch.randn(1000) * 2 + 0.5
    scale, zp = minmax_qparams(x, 8, symmetric=False)
    ref = torch.quantize_per_tensor(x, float(scale), int(zp), torch.quint8).int_repr()
    assert torch.equal(quantize(x, scale, zp, 8, False), ref)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_quantize_matches_torch_per_channel_symmetric():
    w = torch.randn(8, 4, 3, 3)
    scale, zp = minmax_qparams(w, 8, symmetric=True, axis=0)
    ref = torch.quantize_per_channel(w, scale.double(), zp, 0, torch.qint8).int_repr()
    assert torch.equal(quantize(w, scale, zp, 8, True, axis=0), ref)


def test_asymmetric_range_represents_zero_exactly():
    scale, zp = qparams_from_range(0.3, 5.0, bits=8, symmetric=False)
    assert int(zp) == 0  # range widened to include 0
    scale, zp = qparams_from_range(-1.3, 2.7, bits=4, symmetric=False)
    q0 = quantize(torch.zeros(1), scale, zp, 4, False)
    assert float(dequantize(q0, scale, zp)) == 0.0


def test_fake_quantize_equals_quantize_dequantize():
    x = torch.randn(3, 7) * 3
    scale, zp = minmax_qparams(x, 5, symmetric=False)
    ref = dequantize(quantize(x, scale, zp, 5, False), scale, zp)
    assert torch.allclose(fake_quantize(x, scale, zp, 5, False), ref, atol=1e-6)


def test_ste_gradient_one_inside_zero_outside():
    x = torch.tensor([-3.0, -0.55, 0.0, 0.31, 0.69, 2.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.1), torch.tensor(0), bits=4, symmetric=True)  # [-0.7, 0.7]
    y.backward(torch.ones_like(y))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_ste_per_channel_gradient():
    x = torch.tensor([[0.5, 5.0], [0.5, 5.0]], requires_grad=True)
    scale = torch.tensor([0.1, 1.0])
    fake_quantize(x, scale, torch.zeros(2, dtype=torch.long), 4, True, axis=0).sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0], [1.0, 1.0]]


def test_lsq_gradients_match_paper_and_are_finite():
    qmin, qmax = -7, 7
    x = torch.tensor([0.26, -0.04, 5.0, -5.0], requires_grad=True)
    s = torch.tensor(0.1, requires_grad=True)
    g = lsq_grad_scale(x.numel(), qmax)
    y = lsq_fake_quantize(x, s, qmin, qmax, g)
    y.sum().backward()
    assert torch.allclose(y.detach(), torch.tensor([0.3, -0.0, 0.7, -0.7]))
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    # d y / d s: -x/s + round(x/s) inside, qmax / qmin when clipped (Esser et al. eq. 3)
    expected = ((-2.6 + 3) + (0.4 + 0.0) + qmax + qmin) * g
    assert torch.isfinite(s.grad)
    assert abs(float(s.grad) - expected) < 1e-5


def test_lsq_per_channel_and_init():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    step = lsq_init_step(w, 127, axis=0).requires_grad_()
    assert step.shape == (4,)
    lsq_fake_quantize(w, step, -127, 127, lsq_grad_scale(27, 127), axis=0).pow(2).sum().backward()
    assert torch.isfinite(step.grad).all() and torch.isfinite(w.grad).all()
