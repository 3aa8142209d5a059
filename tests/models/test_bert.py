"""The zoo BERT: shapes, masks, and the attention against a direct implementation."""

from __future__ import annotations

import torch

from nnshrink.models import create, input_kind
from nnshrink.models.bert import BertSelfAttention


def test_bert_classifies_token_ids_and_respects_padding():
    model = create("bert", depth=2, dim=32, num_heads=4).eval()
    ids = torch.randint(0, 1000, (2, 8))
    assert input_kind("bert") == "tokens" and model(ids).shape == (2, 10)
    mask = torch.ones(2, 8)
    mask[:, 6:] = 0
    changed = ids.clone()
    changed[:, 6:] = 7  # padded tokens do not matter
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask), model(changed, mask))


def test_self_attention_matches_a_direct_computation():
    torch.manual_seed(0)
    attn = BertSelfAttention(8, 2)
    x = torch.randn(1, 3, 8)
    q, k, v = attn.query(x), attn.key(x), attn.value(x)
    heads = []
    for h in range(2):
        s = slice(4 * h, 4 * h + 4)
        w = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 2.0, dim=-1)
        heads.append(w @ v[..., s])
    torch.testing.assert_close(attn(x), attn.output(torch.cat(heads, dim=-1)))
