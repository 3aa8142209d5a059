"""Which convs :class:`~nnshrink.compact.CompactReplace` replaces, and why it leaves the others.

Selection is :class:`~nnshrink.core.LayerSelection`'s (``include`` / ``exclude`` / ``per_layer``,
whole-name regexes and tokens), with the candidates being every ``nn.Conv2d`` the model runs, in
call order: ``@first`` is the first conv the model runs whatever ``include`` says, so the default
``exclude=("@first",)`` keeps protecting the stem when ``include`` narrows the rest. Then come
the technical reasons a block cannot stand in for a conv (1x1, grouped, odd shapes, what reads
the conv's output for ``crelu``), each reported as a sentence.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from torch import nn

from .._deprecated import REMOVED_IN
from ..core.layers import matches
from .graph import ConvUse
from .transfer import transfer_skip_reason
from .transferred import TRANSFERRED_BLOCKS

if TYPE_CHECKING:
    from .replace import CompactReplace


def skip_reason(
    name: str,
    conv: nn.Conv2d,
    config: CompactReplace,
    *,
    is_first: bool = False,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    use: ConvUse | None = None,
) -> str | None:
    """Why ``conv`` is left alone under ``config`` (``None`` when it is to be replaced).

    Args:
        name: the conv's qualified name.
        conv: the conv.
        config: the config (with the conv's ``per_layer`` overrides applied, if any).
        is_first: the conv is the first the model runs (what ``@first`` names).
        filter_fn: the ``compress_`` filter.
        use: how the model uses the conv's output (:func:`nnshrink.compact.graph.conv_uses`),
            needed for ``crelu``.

    Example:
        >>> from nnshrink.compact import CompactReplace
        >>> skip_reason("fc", nn.Conv2d(4, 4, 1), CompactReplace())
        '1x1 pointwise conv (no block is cheaper)'
    """
    position = "first" if is_first else None
    reason = selection_reason(config, name, conv, position)
    if reason is None and filter_fn is not None and not filter_fn(conv, name):
        reason = "rejected by filter_fn"
    return reason or technical_reason(conv, config, use)


def selection_reason(
    config: CompactReplace, name: str, conv: nn.Module, position: str | None
) -> str | None:
    """Why ``include`` / ``exclude`` / ``per_layer`` leave the conv out (``None``: they don't).

    Args:
        config: the config.
        name, conv: the conv and its qualified name.
        position: ``"first"`` / ``"last"`` / ``"only"`` among the convs the model runs, or
            ``None`` (what ``@first`` / ``@last`` match).
    """
    if config.include and not any(matches(p, name, conv, position) for p in config.include):
        return "not matched by include"
    for pattern in config.exclude:
        if matches(pattern, name, conv, position):
            if pattern == "@first":
                return (
                    "first conv (stem: raw pixels, few channels; remove '@first' from exclude "
                    "to include it)"
                )
            return f"matched by exclude {pattern!r}"
    for pattern, value in config.per_layer.items():
        if matches(pattern, name, conv, position):
            if value is None or (isinstance(value, Mapping) and value.get("skip")):
                return f"left alone by per_layer[{pattern!r}]"
            break
    return None


def technical_reason(conv: nn.Conv2d, config: CompactReplace, use: ConvUse | None) -> str | None:
    """Why ``config.block`` cannot stand in for ``conv`` (``None``: it can).

    Args:
        conv: the conv.
        config: the conv's config (``per_layer`` overrides applied).
        use: how its output is read (for ``crelu``), or ``None``.
    """
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not a plain nn.Conv2d"
    if conv.groups == conv.in_channels and conv.groups > 1:
        return "depthwise conv (already compact)"
    if conv.groups > 1:
        return f"grouped conv (groups={conv.groups}; already compact)"
    kernel = tuple(conv.kernel_size)
    if math.prod(kernel) == 1:
        return "1x1 pointwise conv (no block is cheaper)"
    if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return "string padding or non-zero padding_mode (unsupported by the blocks)"
    if config.block in TRANSFERRED_BLOCKS:
        return transfer_skip_reason(config.block, conv, use)
    if config.block == "fire" and any(k % 2 == 0 for k in kernel):
        return f"even kernel {kernel} (fire needs an odd kernel)"
    if config.block == "factorized" and 1 in kernel:
        return f"kernel {kernel} is already one-dimensional"
    if config.block == "fire" and conv.out_channels < 2:
        return "fewer than 2 output channels (fire needs two expand branches)"
    if config.block == "shuffle" and (
        conv.in_channels % config.groups or conv.out_channels % config.groups
    ):
        return (
            f"channels {conv.in_channels}->{conv.out_channels} not divisible by "
            f"groups={config.groups}"
        )
    return None


def whole_name_patterns(config: CompactReplace, names: list[str]) -> CompactReplace:
    """``config`` with old-style searched patterns rewritten to whole-name ones (warning once).

    Before 0.5, ``include`` / ``exclude`` were searched in the name (``re.search``); now they
    match whole names, as in every technique. A pattern that matches no whole name but is found
    inside some still selects those, with a ``DeprecationWarning`` naming the new spelling.
    """
    changes = {}
    for field in ("include", "exclude"):
        patterns = list(getattr(config, field))
        for i, pattern in enumerate(patterns):
            if pattern.startswith("@") or any(re.fullmatch(pattern, n) for n in names):
                continue
            if any(re.search(pattern, n) for n in names):
                patterns[i] = f".*(?:{pattern}).*"
                warnings.warn(
                    f"compact.{field}: {pattern!r} matches no whole conv name; it is searched "
                    f"inside names as before, which is deprecated and will be removed in "
                    f"nnshrink {REMOVED_IN}; write {patterns[i]!r}",
                    DeprecationWarning,
                    stacklevel=4,
                )
        if patterns != list(getattr(config, field)):
            changes[field] = tuple(patterns)
    return dataclasses.replace(config, **changes) if changes else config


def position_of(index: int, total: int) -> str | None:
    """The ``@first`` / ``@last`` position of candidate ``index`` of ``total``.

    Example:
        >>> [position_of(i, 3) for i in range(3)], position_of(0, 1)
        (['first', None, 'last'], 'only')
    """
    if total == 1:
        return "only"
    return "first" if index == 0 else "last" if index == total - 1 else None


def overrides_for(config: CompactReplace, name: str, conv: nn.Module, position: str | None) -> dict:
    """The first matching ``per_layer`` entry's fields for this conv (``{}`` when none match)."""
    for pattern, value in config.per_layer.items():
        if matches(pattern, name, conv, position):
            return {k: v for k, v in (value or {}).items() if k != "skip"}
    return {}
