"""Head-count attributes of attention modules, updated by nnshrink after heads are pruned.

An attention module reads its head count or width from plain Python attributes in its forward
(``self.num_heads`` in ``view(B, T, self.num_heads, self.head_dim)``, GPT-2's
``split(self.split_size, dim=2)``, BERT's ``all_head_size``). Once whole heads are gone those
attributes must follow, or the forward breaks (Torch-Pruning leaves this to the user). The
graph records where each projection was split into heads (:class:`~.graph.HeadSplit`: the
module whose forward did it, the head size, one label per head); after slicing, the attributes
of that module whose *value* matches the old count or width and whose *name* is one of the
known spellings below are set to the new one. Queries and keys/values are told apart by count
(grouped-query attention has fewer key/value heads); ``head_dim`` never changes, because heads
go whole. A forward that computes its sizes some other way is caught by the check pass of the
pruner (one forward on a pruned copy) before the user's model is touched.

Attributes stay plain ints on the module, so checkpoints can record them.

Example:
    >>> from torch import nn
    >>> attn = nn.Module(); attn.num_heads, attn.head_dim, attn.all_head_size = 4, 8, 32
    >>> update_head_attributes(attn, [(4, 2)], head_dim=8)
    {'num_heads': (4, 2), 'all_head_size': (32, 16)}
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["COUNT_ATTRS", "KV_COUNT_ATTRS", "WIDTH_ATTRS", "update_head_attributes"]

COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "heads", "nheads",
               "num_q_heads")  # fmt: skip
KV_COUNT_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "n_kv_head", "kv_heads")
WIDTH_ATTRS = ("all_head_size", "inner_dim", "split_size", "embed_dim", "attn_dim",
               "attention_dim", "inner_size", "hidden_size_per_partition")  # fmt: skip
KV_WIDTH_ATTRS = ("kv_dim", "kv_size", "key_value_dim")


def update_head_attributes(
    module: nn.Module, counts: Sequence[tuple[int, int]], head_dim: int
) -> dict[str, tuple[int, int]]:
    """Set the head-count and width attributes of ``module`` after pruning heads.

    Args:
        module: the attention module (the one whose forward split the projections).
        counts: ``(heads before, heads after)`` of each projection split in its forward (the
            query has the most heads; fewer means keys/values of grouped-query attention).
        head_dim: the size of one head.

    Returns:
        ``{attribute: (old, new)}`` for every attribute changed.
    """
    if not counts:
        return {}
    q_before, q_after = max(counts)
    kv_before, kv_after = min(counts)
    rules = [
        (COUNT_ATTRS, q_before, q_after),
        (KV_COUNT_ATTRS, kv_before, kv_after),
        (WIDTH_ATTRS, q_before * head_dim, q_after * head_dim),
        (KV_WIDTH_ATTRS, kv_before * head_dim, kv_after * head_dim),
    ]
    changed: dict[str, tuple[int, int]] = {}
    for names, before, after in rules:
        if before == after:
            continue
        for name in names:
            value = module.__dict__.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value == before:
                setattr(module, name, after)
                changed[name] = (before, after)
    return changed
