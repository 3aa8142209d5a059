"""A small GPT-style causal language model (pre-LN blocks, byte vocabulary by default).

Written for compression experiments: attention uses four plain ``nn.Linear`` projections
(``q``, ``k``, ``v``, ``o``) so that pruners see heads as row blocks of ``q``/``k``/``v`` and
column blocks of ``o``, int8 paths see ordinary Linear layers, and low-rank methods can factor
each projection. The head count lives in plain attributes (``num_heads``, ``head_dim``) that a
head pruner updates; ``forward`` reads the head count and infers the head width from the
tensors, so a pruned model keeps running. The attention probabilities pass through a
:class:`AttentionProbs` module, so hooks (e.g. attention-map distillation) can read them.

The output head is **untied** from the token embedding: pruning or quantizing ``head`` then
leaves the embedding alone, and every method in the benchmarks treats the two separately.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model


class AttentionProbs(nn.Module):
    """Softmax over the last dimension; a module so that hooks can capture attention maps."""

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return torch.softmax(scores, dim=-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate ``q``/``k``/``v``/``o`` projections.

    Args:
        dim: model (residual) width.
        num_heads: attention heads; ``dim`` must be divisible by it.
        context: longest sequence (kept for reference; the mask is built per call).
        dropout: dropout on the attention probabilities and the output.

    Example:
        >>> attn = CausalSelfAttention(32, 4, context=16)
        >>> attn(torch.zeros(2, 8, 32)).shape
        torch.Size([2, 8, 32])
    """

    is_causal = True  # read by nnshrink.distill to mask attention relations

    def __init__(self, dim: int, num_heads: int, context: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.probs = AttentionProbs()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        h = self.num_heads
        # head width from the tensors (-1), not from head_dim: pruned q/k and v may differ
        q = self.q(x).view(b, t, h, -1).transpose(1, 2)
        k = self.k(x).view(b, t, h, -1).transpose(1, 2)
        v = self.v(x).view(b, t, h, -1).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
        # the mask from positions (no buffer sliced by t): torch.fx traces it
        pos = torch.arange(t, device=x.device)
        scores = scores.masked_fill(pos[None, :] > pos[:, None], float("-inf"))
        attn = self.drop(self.probs(scores))
        y = (attn @ v).transpose(1, 2).reshape(b, t, -1)
        return self.drop(self.o(y))


class MLP(nn.Module):
    """``fc2(gelu(fc1(x)))``: the position-wise feed-forward block."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(F.gelu(self.fc1(x))))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    def __init__(self, dim: int, num_heads: int, hidden: int, context: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, num_heads, context, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, hidden, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """GPT-style decoder: token + learned position embeddings, pre-LN blocks, untied head.

    Args:
        vocab_size: tokens (256 for the byte tokenizer of :mod:`nnshrink.data.text`).
        context: longest input sequence.
        dim: residual width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        dropout: dropout in attention, MLP and on the embeddings.

    Returns (forward):
        ``(batch, seq, vocab_size)`` next-token logits for ``(batch, seq)`` token ids.

    Example:
        >>> lm = GPT(vocab_size=256, context=32, dim=64, depth=2, num_heads=4)
        >>> lm(torch.zeros(1, 10, dtype=torch.long)).shape
        torch.Size([1, 10, 256])
    """

    def __init__(
        self,
        vocab_size: int = 256,
        context: int = 128,
        dim: int = 256,
        depth: int = 4,
        num_heads: int = 8,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size, self.context = vocab_size, context
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(context, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio * dim, context, dropout) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.apply(_init_weights)
        for block in self.blocks:  # GPT-2: scale the residual projections by 1/sqrt(2 * depth)
            for proj in (block.attn.o, block.mlp.fc2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * depth))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        # torch._assert, not `if`: torch.fx traces it (structured pruning traces this forward)
        torch._assert(t <= self.context, "the sequence is longer than the model's context")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(pos))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


@register_model("gpt", inputs="tokens")
def gpt(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    vocab_size: int = 256,
    context: int = 128,
    dim: int = 256,
    depth: int = 4,
    num_heads: int = 8,
    mlp_ratio: int = 4,
    dropout: float = 0.0,
) -> nn.Module:
    """The zoo's small causal LM (3.3M parameters by default; see :class:`GPT`).

    ``num_classes``, ``in_channels`` and ``input_size`` are the zoo's image arguments and are
    ignored; the model takes ``(batch, seq)`` token ids.

    Example:
        >>> from nnshrink.models import create
        >>> sum(p.numel() for p in create("gpt").parameters())
        3323392
    """
    del num_classes, in_channels, input_size
    return GPT(vocab_size, context, dim, depth, num_heads, mlp_ratio, dropout)
