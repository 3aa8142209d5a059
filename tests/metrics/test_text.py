"""Text metrics against direct computations: pooling, fidelity, perplexity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nnshrink.metrics.text import embedding_fidelity, encode, mean_pool, perplexity


def test_mean_pool_equals_a_loop_over_real_tokens():
    emb = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    expected = torch.stack([emb[i, : int(mask[i].sum())].mean(0) for i in range(3)])
    torch.testing.assert_close(mean_pool(emb, mask), expected)
    emb2 = emb.clone()
    emb2[mask == 0] = 1e6  # padding never leaks in
    torch.testing.assert_close(mean_pool(emb2, mask), expected)
    with pytest.raises(ValueError, match=r"\(N, T\) mask"):
        mean_pool(emb, mask[:, :3])


def test_embedding_fidelity_is_the_mean_cosine():
    a, b = torch.randn(6, 8), torch.randn(6, 8)
    an, bn = a.double().numpy(), b.double().numpy()
    cos = (an * bn).sum(1) / np.linalg.norm(an, axis=1) / np.linalg.norm(bn, axis=1)
    assert embedding_fidelity(a, b) == pytest.approx(cos.mean(), rel=1e-12)
    assert embedding_fidelity(a, 3 * a) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="one shape"):
        embedding_fidelity(a, b[:5])


def test_encode_takes_dicts_tuples_and_plain_callables():
    class Pool(nn.Module):
        def forward(self, input_ids, attention_mask):
            return mean_pool(input_ids.float().unsqueeze(-1).repeat(1, 1, 2), attention_mask)

    ids = torch.tensor([[1, 3, 0], [2, 2, 2]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    model = Pool().train()
    by_dict = encode(model, [{"input_ids": ids, "attention_mask": mask}])
    by_tuple = encode(model, [(ids[:1], mask[:1]), (ids[1:], mask[1:])])
    assert by_dict.tolist() == by_tuple.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert model.training  # mode restored
    assert encode(lambda a, b: torch.ones(len(a), 3), [(ids, mask)]).shape == (2, 3)
    with pytest.raises(ValueError, match="no batches"):
        encode(model, [])


def test_perplexity_is_exp_of_the_mean_token_nll():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 7))  # logits = an embedding row per token
    batches = [(torch.randint(0, 7, (2, 5)), torch.randint(0, 7, (2, 5))) for _ in range(3)]
    logp = torch.log_softmax(model[0].weight.detach().double(), dim=1)
    nll = [-logp[x, y] for xb, yb in batches for x, y in zip(xb.flatten(), yb.flatten())]
    expected = math.exp(float(sum(nll)) / len(nll))
    assert perplexity(model, batches) == pytest.approx(expected, rel=1e-9)
    assert perplexity(model, batches, max_batches=1) != pytest.approx(expected)

    class HFStyle(nn.Module):  # outputs with .logits (Hugging Face)
        def forward(self, x):
            return type("Out", (), {"logits": torch.zeros(*x.shape, 4)})()

    small = [(x, y % 4) for x, y in batches]
    assert perplexity(HFStyle(), small) == pytest.approx(4.0)  # uniform over 4 tokens
    with pytest.raises(ValueError, match="vocab"):
        perplexity(nn.Identity(), [(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long))])
