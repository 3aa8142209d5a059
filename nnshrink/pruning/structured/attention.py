"""``nn.MultiheadAttention`` for structured pruning: its rule, and the module it becomes.

PyTorch's ``nn.MultiheadAttention`` ties its attention width (``num_heads * head_dim``) to its
query width ``embed_dim``, so it cannot hold fewer heads than its input has channels. When
heads (or its input/output width) are pruned, it is replaced in its parent by
:class:`PrunableMultiheadAttention`: the same computation with separate widths, the same
parameter names (``in_proj_weight`` or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``,
``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``) so that state-dict tooling keeps
working, the same ``forward`` signature, and the attributes ``nn.TransformerEncoderLayer``
reads (``batch_first``, ``in_proj_bias``, ``num_heads``, ``_qkv_same_embed_dim``). Its
``_qkv_same_embed_dim`` is ``False``: the encoder layer then takes its regular path, which runs
any attention module, instead of the fused kernel that assumes width == ``embed_dim``. It
exports to ONNX (``scaled_dot_product_attention`` or plain matmul/softmax) and is registered with
:func:`nnshrink.io.register_module`, so pruned checkpoints rebuild.

Unsupported (refused before any edit): ``add_bias_kv`` and ``add_zero_attn``.

Example:
    >>> mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    >>> x = torch.randn(2, 5, 16)
    >>> new = PrunableMultiheadAttention.from_torch(mha)
    >>> torch.allclose(new(x, x, x)[0], mha(x, x, x)[0], atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnshrink.io import layer_kwargs, register_module

from .layer_ops import _linear_in, _linear_out, index_of, register_layer_ops, slice_tensor_attr

__all__ = ["PrunableMultiheadAttention"]


class PrunableMultiheadAttention(nn.Module):
    """Multi-head attention with independent widths (query in, key in, value in, heads, out).

    Args:
        embed_dim: query input width.
        num_heads: number of heads.
        head_dim: width of one head (default ``embed_dim // num_heads``).
        kdim, vdim: key / value input widths (default ``embed_dim``).
        out_dim: output width (default ``embed_dim``).
        bias: biases on the projections.
        dropout: dropout on the attention weights (training only).
        batch_first: inputs are ``(batch, seq, feature)`` rather than ``(seq, batch, feature)``.
        packed: one ``in_proj_weight`` for q, k and v (default when ``kdim == vdim ==
            embed_dim``), as ``nn.MultiheadAttention`` does.

    Example:
        >>> attn = PrunableMultiheadAttention(16, num_heads=2, head_dim=4, batch_first=True)
        >>> attn(torch.zeros(1, 3, 16), torch.zeros(1, 3, 16), torch.zeros(1, 3, 16))[0].shape
        torch.Size([1, 3, 16])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int | None = None,
        kdim: int | None = None,
        vdim: int | None = None,
        out_dim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
        packed: bool | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim if head_dim is not None else embed_dim // num_heads
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.dropout = dropout
        self.batch_first = batch_first
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        # False sends nn.TransformerEncoderLayer down its regular path (see module docstring)
        self._qkv_same_embed_dim = False
        width = self.num_heads * self.head_dim
        if packed is None:
            packed = self.kdim == embed_dim and self.vdim == embed_dim
        if packed:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * width, embed_dim))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(width, embed_dim))
            self.k_proj_weight = nn.Parameter(torch.empty(width, self.kdim))
            self.v_proj_weight = nn.Parameter(torch.empty(width, self.vdim))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        else:
            self.register_parameter("in_proj_bias", None)
        linear = nn.modules.linear.NonDynamicallyQuantizableLinear
        self.out_proj = linear(width, out_dim if out_dim is not None else embed_dim, bias=bias)
        for p in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if p is not None and not p.is_meta:
                nn.init.xavier_uniform_(p)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> PrunableMultiheadAttention:
        """The same attention (same parameter objects) as a :class:`PrunableMultiheadAttention`.

        Raises:
            UnsupportedModelError: ``add_bias_kv`` or ``add_zero_attn`` is set.
        """
        if mha.bias_k is not None or mha.add_zero_attn:
            from .graph import UnsupportedModelError

            raise UnsupportedModelError(
                "nn.MultiheadAttention with add_bias_kv or add_zero_attn cannot be pruned; "
                "add it to `exclude`"
            )
        with torch.device("meta"):
            new = cls(
                mha.embed_dim,
                mha.num_heads,
                mha.head_dim,
                mha.kdim,
                mha.vdim,
                mha.out_proj.out_features,
                bias=mha.in_proj_bias is not None,
                dropout=mha.dropout,
                batch_first=mha.batch_first,
                packed=mha._qkv_same_embed_dim,
            )
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight",
                     "in_proj_bias"):  # fmt: skip
            setattr(new, name, getattr(mha, name))
        new.out_proj = mha.out_proj
        new.train(mha.training)
        return new

    @property
    def out_dim(self) -> int:
        return self.out_proj.out_features

    def init_kwargs(self) -> dict[str, Any]:
        """Constructor kwargs giving this module's parameter shapes (checkpoints rebuild it)."""
        return {
            "embed_dim": self.embed_dim, "num_heads": self.num_heads, "head_dim": self.head_dim,
            "kdim": self.kdim, "vdim": self.vdim, "out_dim": self.out_dim,
            "bias": self.in_proj_bias is not None, "dropout": self.dropout,
            "batch_first": self.batch_first, "packed": self.in_proj_weight is not None,
        }  # fmt: skip

    def _projections(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.in_proj_weight is not None:
            return self.in_proj_weight.chunk(3)
        return self.q_proj_weight, self.k_proj_weight, self.v_proj_weight

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (
                t.unsqueeze(0 if self.batch_first else 1) for t in (query, key, value)
            )
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n_q, n_k = query.shape[0], query.shape[1], key.shape[1]
        w_q, w_k, w_v = self._projections()
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = F.linear(query, w_q, b_q).view(b, n_q, -1, self.head_dim).transpose(1, 2)
        k = F.linear(key, w_k, b_k).view(b, n_k, -1, self.head_dim).transpose(1, 2)
        v = F.linear(value, w_v, b_v).view(b, n_k, -1, self.head_dim).transpose(1, 2)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint")
        use_causal = is_causal and key_padding_mask is None and not need_weights
        mask = None if use_causal else _merge_masks(attn_mask, key_padding_mask, q, b, n_q, n_k)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) * (self.head_dim**-0.5)
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            out = F.dropout(weights, dropout, self.training) @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
            if unbatched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=use_causal)  # fmt: skip
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(b, n_q, -1))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(0 if self.batch_first else 1)
        return out, weights

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"head_dim={self.head_dim}, out_dim={self.out_dim}")  # fmt: skip


def _float_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(like.dtype)


def _merge_masks(attn_mask, key_padding_mask, q, b, n_q, n_k) -> torch.Tensor | None:
    """``(B, H or 1, L, S)`` additive mask from torch's ``attn_mask`` and ``key_padding_mask``."""
    mask = None
    if attn_mask is not None:
        mask = _float_mask(attn_mask, q)
        mask = mask.view(b, -1, n_q, n_k) if mask.dim() == 3 else mask.view(1, 1, n_q, n_k)
    if key_padding_mask is not None:
        pad = _float_mask(key_padding_mask, q).view(b, 1, 1, n_k)
        mask = pad if mask is None else mask + pad
    return mask


# ---------------------------------------------------------------------------- pruning rule
def _packed(m: nn.Module) -> bool:
    return getattr(m, "in_proj_weight", None) is not None


def _trace(call: Any) -> Any:
    """q/k/v inputs (one shared width when packed), heads, output: four dimensions."""
    m = call.module
    (q, qi), (k, ki), (v, vi) = call.arg(0, "query"), call.arg(1, "key"), call.arg(2, "value")
    q_labels = call.along(qi, q, -1)
    call.port("in", q_labels)
    if _packed(m):
        call.union(q_labels, call.along(ki, k, -1))  # the same columns read q, k and v
        call.union(q_labels, call.along(vi, v, -1))
    else:
        call.port("in_k", call.along(ki, k, -1))
        call.port("in_v", call.along(vi, v, -1))
    call.heads(call.port("heads", size=m.num_heads))
    out = call.out[0]
    labels = call.port("out", size=out.shape[-1])
    return [call.output(out.dim() - 1, labels), None]


def _convert(m: nn.Module) -> nn.Module:
    return PrunableMultiheadAttention.from_torch(m) if type(m) is nn.MultiheadAttention else m


def _heads(m: PrunableMultiheadAttention, keep: torch.Tensor) -> None:
    idx = index_of(keep, m.num_heads, "head")
    d, width = m.head_dim, m.num_heads * m.head_dim
    rows = (idx[:, None] * d + torch.arange(d)).reshape(-1)
    if _packed(m):
        slice_tensor_attr(m, "in_proj_weight", torch.cat([rows, rows + width, rows + 2 * width]), 0)
    else:
        for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            slice_tensor_attr(m, name, rows, 0)
    slice_tensor_attr(m, "in_proj_bias", torch.cat([rows, rows + width, rows + 2 * width]), 0)
    _linear_in(m.out_proj, rows)
    m.num_heads = idx.numel()


def _in(m: PrunableMultiheadAttention, keep: torch.Tensor) -> None:
    idx = index_of(keep, m.embed_dim, "input")
    slice_tensor_attr(m, "in_proj_weight" if _packed(m) else "q_proj_weight", idx, 1)
    if _packed(m):
        m.kdim = m.vdim = idx.numel()
    m.embed_dim = idx.numel()


def _in_k(m: PrunableMultiheadAttention, keep: torch.Tensor) -> None:
    idx = index_of(keep, m.kdim, "key")
    slice_tensor_attr(m, "k_proj_weight", idx, 1)
    m.kdim = idx.numel()


def _in_v(m: PrunableMultiheadAttention, keep: torch.Tensor) -> None:
    idx = index_of(keep, m.vdim, "value")
    slice_tensor_attr(m, "v_proj_weight", idx, 1)
    m.vdim = idx.numel()


def _out(m: PrunableMultiheadAttention, keep: torch.Tensor) -> None:
    _linear_out(m.out_proj, keep)


def _weights(m: nn.Module, dim: str) -> list[tuple[torch.Tensor, Any, int]]:
    """Per-head scores read every q/k/v row of the head and its output-projection columns."""
    if dim == "heads":
        h, d = m.num_heads, m.head_dim
        out = []
        for w in (m.in_proj_weight, m.q_proj_weight, m.k_proj_weight, m.v_proj_weight):
            if w is not None:
                view = w.reshape(-1, h, d, w.shape[-1]).transpose(0, 1)
                grad = None if w.grad is None else w.grad.reshape(view.transpose(0, 1).shape)
                out.append((view, None if grad is None else grad.transpose(0, 1), 0))
        ow = m.out_proj.weight
        og = None if ow.grad is None else ow.grad.reshape(ow.shape[0], h, d)
        out.append((ow.reshape(ow.shape[0], h, d), og, 1))
        return out
    if dim == "out":
        return [(m.out_proj.weight, m.out_proj.weight.grad, 0)]
    return []


_DIMS = {"heads": _heads, "in_k": _in_k, "in_v": _in_v}
for _cls in (nn.MultiheadAttention, PrunableMultiheadAttention):
    register_layer_ops(_cls, _out, _in, trace=_trace, dims=_DIMS, weights=_weights,
                       convert=_convert if _cls is nn.MultiheadAttention else None)  # fmt: skip
register_module(PrunableMultiheadAttention, lambda m: m.init_kwargs())
# nn.MultiheadAttention's out_proj class (a plain Linear for everything but quantization)
register_module(nn.modules.linear.NonDynamicallyQuantizableLinear, layer_kwargs)
