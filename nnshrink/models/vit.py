"""A small Vision Transformer (Dosovitskiy et al. 2021) for 28x28 / 32x32 images.

Patch embedding by a strided convolution, a learned class token and position embedding,
pre-norm blocks (``x + attn(ln(x))``, ``x + mlp(ln(x))``) and a linear head on the class token.
The attention is written the way timm writes it (one fused ``qkv`` projection reshaped to
``(3, heads, head_dim)``), with the head count in the plain attributes ``num_heads`` and
``head_dim``, so structured pruning can remove whole heads and update them.

Defaults (``create("vit")``): patch 7 (16 patches + class token on 28x28), width 128, 6 blocks of
4 heads, MLP ratio 2: 0.80M parameters, 13.6M MACs per 28x28 sample.

Example:
    >>> from nnshrink.models import create
    >>> model = create("vit", depth=2)
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["Attention", "Block", "ViT"]


class Attention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection.

    Args:
        dim: token width.
        num_heads: number of heads.
        head_dim: width of one head (default ``dim // num_heads``).
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim if head_dim is not None else dim // num_heads
        self.dropout = dropout
        inner = num_heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * inner)
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        """Projections plus the two attention products (hooks cannot see the latter)."""
        x = inputs[0]
        tokens, n = x.shape[0] * x.shape[1], x.shape[1]
        inner = self.num_heads * self.head_dim
        projections = tokens * (self.qkv.in_features * self.qkv.out_features
                                + self.proj.in_features * self.proj.out_features)  # fmt: skip
        return projections + 2 * x.shape[0] * n * n * inner


class Block(nn.Module):
    """Pre-norm transformer block: attention and a GELU MLP, each with a residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0,
                 dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.fc2(self.act(self.fc1(self.norm2(x)))))


class ViT(nn.Module):
    """Vision Transformer classifier.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        input_size: image height (= width).
        patch_size: patch height (= width); the image is cut into ``(input_size // patch)**2``.
        dim: token width.
        depth: number of blocks.
        num_heads: heads per block.
        mlp_ratio: MLP hidden width / ``dim``.
        dropout: dropout in attention, after attention/MLP and on the embeddings.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28,
                 patch_size: int = 7, dim: int = 128, depth: int = 6, num_heads: int = 4,
                 mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        grid = input_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid + 1, dim) * 0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[Block(dim, num_heads, mlp_ratio, dropout) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(self.drop(x)))
        return self.head(x[:, 0])


@register_model("vit")
def vit(num_classes: int = 10, in_channels: int = 1, input_size: int = 28, patch_size: int = 7,
        dim: int = 128, depth: int = 6, num_heads: int = 4, mlp_ratio: float = 2.0,
        dropout: float = 0.0) -> ViT:  # fmt: skip
    """ViT for small images (see the module docstring for the defaults)."""
    return ViT(num_classes, in_channels, input_size, patch_size, dim, depth, num_heads,
               mlp_ratio, dropout)  # fmt: skip
