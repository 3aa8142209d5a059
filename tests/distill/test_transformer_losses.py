"""Transformer distillation losses against hand computations (loops, float64 numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnshrink.distill.losses import kd_loss
from nnshrink.distill.transformer_losses import (
    attention_relation,
    attention_score_mse,
    attention_scores,
    hidden_state_loss,
    last_layer_map,
    output_loss,
    relation_kl_loss,
    uniform_layer_map,
)

MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def test_hidden_state_loss_averages_real_tokens_only():
    s, t = torch.randn(2, 5, 3), torch.randn(2, 5, 4)
    proj = torch.nn.Linear(3, 4, bias=False)
    ps = proj(s).detach()
    sq = [((ps[i, j] - t[i, j]) ** 2).sum() for i in range(2) for j in range(5) if MASK[i, j]]
    expected = sum(sq) / (len(sq) * 4)
    torch.testing.assert_close(hidden_state_loss(s, t, proj, MASK), expected)
    torch.testing.assert_close(hidden_state_loss(t, 2 * t), (t**2).mean())
    with pytest.raises(ValueError, match="projection"):
        hidden_state_loss(s, t)


def _relation64(q, k, heads, mask, causal):
    """Per-head softmax(q k^T / sqrt(d)) with a loop over heads, in float64."""
    n, t, d = q.shape
    dh = d // heads
    out = np.zeros((n, heads, t, t))
    for b in range(n):
        for h in range(heads):
            qh = q[b, :, h * dh : (h + 1) * dh].double().numpy()
            kh = k[b, :, h * dh : (h + 1) * dh].double().numpy()
            z = qh @ kh.T / np.sqrt(dh)
            allowed = np.ones((t, t), bool)
            if mask is not None:
                allowed &= mask[b].numpy().astype(bool)[None, :]
            if causal:
                allowed &= np.tril(np.ones((t, t), bool))
            z = np.where(allowed, z, -np.inf)
            out[b, h] = _softmax(z)
    return out


@pytest.mark.parametrize(("mask", "causal"), [(None, False), (MASK, False), (None, True),
                                              (MASK, True)])  # fmt: skip
def test_attention_relation_matches_a_per_head_loop(mask, causal):
    q, k = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    got = attention_relation(q, k, 3, attention_mask=mask, causal=causal).exp()
    np.testing.assert_allclose(got.double().numpy(), _relation64(q, k, 3, mask, causal), atol=1e-6)
    with pytest.raises(ValueError, match="relation heads"):
        attention_relation(q, k, 5)


def test_relation_kl_matches_numpy_and_skips_padded_queries():
    s = attention_relation(torch.randn(2, 5, 8), torch.randn(2, 5, 8), 2, attention_mask=MASK)
    t = attention_relation(torch.randn(2, 5, 8), torch.randn(2, 5, 8), 2, attention_mask=MASK)
    ps, pt = s.exp().double().numpy(), t.exp().double().numpy()
    rows = [
        np.sum(np.where(pt[b, h, i] > 0, pt[b, h, i] * (np.log(pt[b, h, i] + 1e-300)
                                                         - np.log(ps[b, h, i] + 1e-300)), 0))
        for b in range(2) for h in range(2) for i in range(5) if MASK[b, i]
    ]  # fmt: skip
    assert relation_kl_loss(s, t, MASK).item() == pytest.approx(np.mean(rows), rel=1e-4)
    assert relation_kl_loss(t, t, MASK).item() == pytest.approx(0.0, abs=1e-7)
    assert torch.isfinite(relation_kl_loss(s, t, MASK))


def test_attention_score_mse_over_used_pairs():
    q, k = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    s = attention_scores(q, k, 2, attention_mask=MASK, causal=True)
    t = attention_scores(2 * q, k, 2, attention_mask=MASK, causal=True)
    sq = [(s[b, h, i, j] - t[b, h, i, j]) ** 2 for b in range(2) for h in range(2)
          for i in range(5) for j in range(5) if MASK[b, i] and MASK[b, j] and j <= i]  # fmt: skip
    torch.testing.assert_close(attention_score_mse(s, t, MASK, causal=True), sum(sq) / len(sq))


def test_output_losses():
    s, t = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    keep = MASK.bool().reshape(-1)
    expected = kd_loss(s.reshape(-1, 7)[keep], t.reshape(-1, 7)[keep], temperature=2.0)
    torch.testing.assert_close(output_loss(s, t, "kd", temperature=2.0, attention_mask=MASK),
                               expected)  # fmt: skip
    e = torch.randn(4, 6)
    assert output_loss(e, -e, "cosine").item() == pytest.approx(2.0)
    torch.testing.assert_close(output_loss(e, 2 * e, "mse"), (e**2).mean())
    with pytest.raises(ValueError, match="one of"):
        output_loss(e, e, "none")


def test_layer_maps():
    assert uniform_layer_map(6, 6) == {i: i for i in range(6)}
    assert uniform_layer_map(4, 12) == {0: 2, 1: 5, 2: 8, 3: 11}  # TinyBERT-4 from BERT-base
    assert last_layer_map(4, 12) == {3: 11}
    with pytest.raises(ValueError, match="explicit layer_map"):
        uniform_layer_map(8, 4)
