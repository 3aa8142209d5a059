"""Indexing rules: ``x[...]``, ``select`` and ``unbind``, for channel and multi-axis labels.

A channel axis survives indexing that leaves it whole; a literal slice of it (``x[:, :16]``) or
an integer index into it fixes the channels (positions would shift after pruning). For
:class:`~.rules.Multi` units (q/k/v x heads) an integer on a unit axis picks a block of units:
``qkv[0]`` or ``q, k, v = qkv.unbind(0)`` are the query, key and value heads.

Example:
    >>> import torch
    >>> from .rules import Info
    >>> class G:
    ...     def _fix(self, labels): raise AssertionError("nothing to fix here")
    >>> getitem(G(), Info(1, [7, 8]), torch.zeros(2, 2, 5), (slice(None), slice(None), 0),
    ...         torch.zeros(2, 2))
    Info(cdim=1, labels=[7, 8])
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .rules import Info, Multi, anon_like


def _expand_index(idx: Any, ndim: int) -> list[Any]:
    items = idx if isinstance(idx, tuple) else (idx,)
    consuming = sum(1 for it in items if it is not None and it is not Ellipsis)
    expanded: list[Any] = []
    for it in items:
        if it is Ellipsis:
            expanded += [slice(None)] * (ndim - consuming)
        else:
            expanded.append(it)
    used = sum(1 for it in expanded if it is not None)
    return expanded + [slice(None)] * (ndim - used)


def getitem(graph: Any, info: Any, x: Any, idx: Any, out: Any) -> Any:
    if isinstance(info, list):
        return info[idx] if isinstance(idx, int | slice) else anon_like(out)
    if not isinstance(x, torch.Tensor):
        return anon_like(out)
    if isinstance(info, Multi):
        return _getitem_multi(graph, info, x, idx, out)
    if not isinstance(info, Info) or info.cdim is None:
        return anon_like(out)
    expanded = _expand_index(idx, x.dim())
    c, labels = info.cdim, info.labels
    in_axis = out_axis = 0
    new_c = None
    for it in expanded:
        if it is None:
            out_axis += 1
            continue
        if isinstance(it, bool) or not isinstance(it, int | slice):
            graph._fix(labels)  # advanced indexing
            return anon_like(out)
        if isinstance(it, int):
            if in_axis == c:
                graph._fix(labels)  # picks one channel by position
                return anon_like(out)
            in_axis += 1
            continue
        if in_axis == c:
            if it.indices(len(labels)) != (0, len(labels), 1):
                graph._fix(labels)  # a literal channel slice would shift after pruning
                labels = labels[it]
            new_c = out_axis
        in_axis += 1
        out_axis += 1
    if new_c is None:
        new_c = out_axis + (c - in_axis)
    return Info(new_c, labels)


def _getitem_multi(graph: Any, info: Multi, x: Any, idx: Any, out: Any) -> Any:
    """Integers on unit axes pick a block of units (``qkv[0]``); slices must be whole."""
    picks: dict[int, int] = {}
    new_axes: dict[int, int] = {}
    in_axis = out_axis = 0
    for it in _expand_index(idx, x.dim()):
        if it is None:
            out_axis += 1
            continue
        if isinstance(it, bool) or not isinstance(it, int | slice):
            graph._fix(info.labels)
            return anon_like(out)
        if isinstance(it, int):
            picks[in_axis] = it % x.shape[in_axis]
        else:
            if in_axis in info.axes and it.indices(x.shape[in_axis]) != (0, x.shape[in_axis], 1):
                graph._fix(info.labels)
                return anon_like(out)
            new_axes[in_axis] = out_axis
            out_axis += 1
        in_axis += 1
    return _select_units(graph, info, picks, new_axes, out)


def _select_units(graph: Any, info: Multi, picks: dict[int, int], new_axes: dict[int, int],
                  out: Any) -> Any:  # fmt: skip
    """Units left after fixing some unit axes to one index (``picks``); axes renumbered."""
    strides = [math.prod(info.sizes[i + 1 :]) for i in range(len(info.sizes))]
    keep_axes = [k for k, a in enumerate(info.axes) if a not in picks]
    base = sum(picks[a] * strides[k] for k, a in enumerate(info.axes) if a in picks)
    labels = []
    for flat in range(math.prod(info.sizes[k] for k in keep_axes) if keep_axes else 1):
        pos, rem = base, flat
        for k in reversed(keep_axes):
            pos += (rem % info.sizes[k]) * strides[k]
            rem //= info.sizes[k]
        labels.append(info.labels[pos])
    if not keep_axes:
        graph._fix(labels)  # one unit picked by position
        return anon_like(out)
    axes = tuple(new_axes[info.axes[k]] for k in keep_axes)
    if len(axes) == 1:
        return Info(axes[0], labels)
    return Multi(axes, tuple(info.sizes[k] for k in keep_axes), labels)


def unbind(graph: Any, info: Any, x: Any, dim: int, out: Any) -> Any:
    dim = dim % x.dim()
    if isinstance(info, Multi) and dim in info.axes:
        renum = {a: a - (a > dim) for a in range(x.dim()) if a != dim}
        return [_select_units(graph, info, {dim: i}, renum, t) for i, t in enumerate(out)]
    if isinstance(info, Multi):
        renum = {a: a - (a > dim) for a in range(x.dim()) if a != dim}
        return [Multi(tuple(renum[a] for a in info.axes), info.sizes, info.labels) for _ in out]
    if isinstance(info, Info) and info.cdim is not None:
        if info.cdim == dim:
            graph._fix(info.labels)
            return anon_like(out)
        return [Info(info.cdim - (info.cdim > dim), info.labels) for _ in out]
    return anon_like(out)
