"""A small BERT-style encoder (Devlin et al. 2019) for sequence classification.

Token and learned position embeddings with LayerNorm, post-norm blocks
(``ln(x + attn(x))``, ``ln(x + mlp(x))``), a tanh pooler on the first token and a linear
classifier. The attention keeps BERT's attributes (``num_attention_heads``,
``attention_head_size``, ``all_head_size``) and uses them in its reshapes, as BERT did, so
structured pruning has to (and does) update them when heads go.

Defaults (``create("bert")``): vocabulary 1,000, width 128, 4 blocks of 4 heads, MLP 512,
sequences up to ``input_size`` (28) tokens.

Example:
    >>> from nnshrink.models import create
    >>> model = create("bert", depth=2)
    >>> model(torch.randint(0, 1000, (2, 12))).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["BERT", "BertLayer", "BertSelfAttention"]


class BertSelfAttention(nn.Module):
    """Multi-head attention with separate query/key/value projections and an output layer."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_attention_heads = num_heads
        self.attention_head_size = dim // num_heads
        self.all_head_size = num_heads * self.attention_head_size
        self.query = nn.Linear(dim, self.all_head_size)
        self.key = nn.Linear(dim, self.all_head_size)
        self.value = nn.Linear(dim, self.all_head_size)
        self.output = nn.Linear(self.all_head_size, dim)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.attention_head_size)
        if mask is not None:
            scores = scores + mask
        context = self.dropout(scores.softmax(dim=-1)) @ v
        return self.output(context.transpose(1, 2).reshape(b, n, self.all_head_size))


class BertLayer(nn.Module):
    """Post-norm block: attention, then a GELU MLP, each followed by residual + LayerNorm."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attention = BertSelfAttention(dim, num_heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.intermediate = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attention(x, mask)))
        return self.norm2(x + self.drop(self.out(F.gelu(self.intermediate(x)))))


class BERT(nn.Module):
    """BERT-style sequence classifier on token ids ``(N, T)`` (optional ``attention_mask``).

    Args:
        num_classes: classifier outputs.
        vocab_size: token vocabulary.
        max_len: longest sequence (position embeddings).
        dim: token width.
        depth: number of blocks.
        num_heads: heads per block.
        mlp_ratio: MLP hidden width / ``dim``.
        dropout: dropout on attention weights and after attention / MLP.
    """

    def __init__(self, num_classes: int = 10, vocab_size: int = 1000, max_len: int = 128,
                 dim: int = 128, depth: int = 4, num_heads: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.layers = nn.ModuleList(
            [BertLayer(dim, num_heads, hidden, dropout) for _ in range(depth)]
        )
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.norm(self.tokens(input_ids) + self.positions(positions))
        mask = None
        if attention_mask is not None:  # 1 = attend, 0 = padding
            mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


@register_model("bert", inputs="tokens")
def bert(num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
         vocab_size: int = 1000, dim: int = 128, depth: int = 4, num_heads: int = 4,
         mlp_ratio: float = 4.0, dropout: float = 0.0) -> BERT:  # fmt: skip
    """BERT-style encoder; ``input_size`` is the longest sequence, ``in_channels`` is unused."""
    return BERT(num_classes, vocab_size, input_size, dim, depth, num_heads, mlp_ratio, dropout)
