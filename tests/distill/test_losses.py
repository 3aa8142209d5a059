import numpy as np
import pytest
import torch

from nnshrink.distill.losses import (
    at_loss,
    attention_map,
    hint_loss,
    kd_loss,
    rkd_distance_loss,
    sp_loss,
)


def _softmax64(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (4.0, 0.9), (20.0, 0.7)])
def test_kd_loss_matches_a_float64_reference(temperature, alpha):
    s, t = torch.randn(6, 10) * 3, torch.randn(6, 10) * 3
    y = torch.randint(0, 10, (6,))
    got = kd_loss(s, t, y, temperature=temperature, alpha=alpha).item()
    s64, t64 = s.double().numpy(), t.double().numpy()
    ps, pt = _softmax64(s64 / temperature), _softmax64(t64 / temperature)
    kl = (pt * (np.log(pt) - np.log(ps))).sum() / len(s64)  # batchmean
    ce = -np.log(_softmax64(s64)[np.arange(6), y.numpy()]).mean()
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    assert got == pytest.approx(expected, rel=1e-5)
    soft_only = kd_loss(s, t, temperature=temperature).item()
    assert soft_only == pytest.approx(temperature**2 * kl, rel=1e-5)


def test_kd_loss_gradient_is_zero_at_the_teacher_and_errors():
    t = torch.randn(4, 5)
    s = t.clone().requires_grad_(True)
    kd_loss(s, t, temperature=3.0).backward()
    assert s.grad.abs().max() < 1e-6
    with pytest.raises(ValueError, match="same classes"):
        kd_loss(torch.randn(2, 5), torch.randn(2, 6))


def test_hint_loss_with_regressor_by_hand():
    s, t = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    reg = torch.nn.Conv2d(3, 5, 1, bias=False)
    expected = ((reg(s) - t) ** 2).sum() / t.numel()
    torch.testing.assert_close(hint_loss(s, t, reg), expected)
    with pytest.raises(ValueError, match="regressor"):
        hint_loss(s, t)


def _at_map64(f, p=2):
    a = (np.abs(f) ** p).sum(axis=1).reshape(f.shape[0], -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_attention_transfer_matches_hand_computation():
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 7, 5, 5)
    qs, qt = _at_map64(s.double().numpy()), _at_map64(t.double().numpy())
    np.testing.assert_allclose(attention_map(s).double().numpy(), qs, rtol=1e-5, atol=1e-7)
    expected = 1000.0 / 2 * ((qs - qt) ** 2).mean()
    assert at_loss(s, t, beta=1000.0).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="spatial"):
        at_loss(s, torch.randn(3, 4, 6, 6))


def test_similarity_preserving_matches_hand_computation():
    s, t = torch.randn(4, 3, 2, 2), torch.randn(4, 6)

    def g(f):
        q = f.reshape(f.shape[0], -1)
        gram = q @ q.T
        return gram / np.linalg.norm(gram, axis=1, keepdims=True)

    diff = g(s.double().numpy()) - g(t.double().numpy())
    expected = 3000.0 * (diff**2).sum() / 16
    assert sp_loss(s, t, gamma=3000.0).item() == pytest.approx(expected, rel=1e-4)


def test_rkd_distance_matches_hand_computation():
    s, t = torch.randn(5, 4), torch.randn(5, 3)

    def dist(f):
        d = np.linalg.norm(f[:, None] - f[None], axis=2)
        off = ~np.eye(len(f), dtype=bool)
        return (d / d[off].mean())[off]

    diff = np.abs(dist(s.double().numpy()) - dist(t.double().numpy()))
    huber = np.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean()
    assert rkd_distance_loss(s, t, weight=25.0).item() == pytest.approx(25 * huber, rel=1e-4)
