"""Channel-flow rules of attention: matrix products and ``scaled_dot_product_attention``.

After :func:`.rules.reshape` has split a projection's channels into heads (``(B, T, H*D) ->
(B, T, H, D)``, one label per head), attention moves heads along the *batch* axes of its matrix
products: ``q @ k.transpose(-2, -1)`` pairs query head h with key head h, ``weights @ v`` pairs
them with value head h. These rules couple labels on batch axes as broadcasting does (so a
repeated key/value head, GQA's ``repeat_kv``, couples every query head of its group with it),
keep labels on the rows of the left and the columns of the right operand, and fix labels on the
contracted axis: channels summed over by a product with an unlabelled matrix cannot be followed
(that would be a functional linear layer).

Example:
    >>> import torch
    >>> from .rules import Info
    >>> class G:  # the few graph methods a rule calls
    ...     def __init__(self): self.pairs = []
    ...     def _union_lists(self, a, b): self.pairs.append((a, b))
    ...     def _fix(self, labels): pass
    >>> q, k = torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 4, 5)
    >>> out = matmul(G(), Info(1, [0, 1]), q, Info(1, [2, 3]), k, q @ k)
    >>> out.cdim, out.labels
    (1, [0, 1])
"""

from __future__ import annotations

from typing import Any

import torch

from .rules import ANON, Info, anon_like


def matmul(graph: Any, a_info: Any, a: Any, b_info: Any, b: Any, out: Any) -> Any:
    """``a @ b`` with broadcast batch axes (``torch.matmul``, ``bmm``, ``@``)."""
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        return anon_like(out)
    if a.dim() < 2 or b.dim() < 2 or not isinstance(out, torch.Tensor):
        for info in (a_info, b_info):
            if isinstance(info, Info) and info.labels:
                graph._fix(info.labels)
        return ANON
    d = out.dim()
    candidates: list[tuple[int, list[int], int]] = []  # (out axis, labels, size)
    for t, info, contracted, kept in ((a, a_info, a.dim() - 1, a.dim() - 2),
                                      (b, b_info, b.dim() - 2, b.dim() - 1)):  # fmt: skip
        if not isinstance(info, Info) or info.cdim is None:
            continue
        c = info.cdim
        if c == contracted:
            graph._fix(info.labels)  # summed over: cannot follow through a product
            continue
        if c == kept:
            axis = d - 2 if t is a else d - 1
        else:
            axis = c + d - t.dim()  # a batch axis, right-aligned like broadcasting
        candidates.append((axis, info.labels, t.shape[c]))
    if not candidates:
        return ANON
    axis, labels, size = candidates[0]
    if size != out.shape[axis]:
        graph._fix(labels)  # broadcast from size 1 onto the other operand's axis
        labels = None
    for other_axis, other, other_size in candidates[1:]:
        if labels is not None and other_axis == axis and other_size == out.shape[axis]:
            graph._union_lists(labels, other)
        elif labels is None and other_size == out.shape[other_axis]:
            axis, labels = other_axis, other
        elif other_size > 1:
            graph._fix(other)  # labels on two different output axes: keep one, fix the other
    return Info(axis, labels) if labels is not None else ANON


def sdpa(graph: Any, infos: list[Any], tensors: list[Any], enable_gqa: bool, out: Any) -> Any:
    """``F.scaled_dot_product_attention(q, k, v)``: heads on axis -3 pair up (GQA: query head i
    with key/value head ``i // (H / H_kv)``); the feature axis (-1) and tokens stay put."""
    q, k, v = tensors[:3]
    qi, ki, vi = (infos + [None] * 3)[:3]
    head_axis = [t.dim() - 3 if t.dim() >= 3 else None for t in (q, k, v)]
    labelled = []
    for t, info, axis in zip((q, k, v), (qi, ki, vi), head_axis):
        if isinstance(info, Info) and info.cdim is not None:
            if axis is not None and info.cdim == axis:
                labelled.append((t, info))
            else:
                graph._fix(info.labels)  # features or tokens: summed over or mixed
    for extra in infos[3:]:
        if isinstance(extra, Info) and extra.labels:
            graph._fix(extra.labels)  # a labelled mask: unexpected, keep it whole
    if not labelled:
        return anon_like(out)
    heads = q.shape[-3] if q.dim() >= 3 else 1
    q_labels = qi.labels if any(info is qi for _, info in labelled) else None
    kv = [(t, info) for t, info in labelled if info is not qi]
    if q_labels is None:
        # only keys/values labelled: the query side is a constant (e.g. learned queries)
        for _, info in kv:
            graph._fix(info.labels)
        return anon_like(out)
    for t, info in kv:
        kv_heads = t.shape[-3]
        if kv_heads == heads:
            graph._union_lists(q_labels, info.labels)
        elif enable_gqa and heads % kv_heads == 0:
            rep = heads // kv_heads
            graph._union_lists(q_labels, [lb for lb in info.labels for _ in range(rep)])
        elif kv_heads == 1:
            graph._fix(q_labels + info.labels)
        else:
            graph._fix(q_labels + info.labels)
    if out.dim() >= 3 and out.shape[-3] == heads:
        return Info(out.dim() - 3, q_labels)
    graph._fix(q_labels)
    return anon_like(out)
