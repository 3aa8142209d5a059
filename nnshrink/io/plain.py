"""Plain values: what a file may hand to a constructor or an attribute, checked before use.

Everything a reader takes from a file header passes through here first: JSON scalars, lists and
string-keyed dicts only, finite numbers, bounded nesting. Attribute values (``num_heads``,
``head_dim``, a ``kernel_size`` tuple) also keep their Python type through a small tagged
encoding: ``{"tuple": [...]}``, ``{"set": [...]}``, ``{"float": "nan"|"inf"|"-inf"}``.
"""

from __future__ import annotations

import math
from typing import Any

MAX_NESTING = 32  # deeper JSON in a header can only come from a crafted file


class PlainValueError(ValueError):
    """A header value is not plain JSON (or not a plain attribute value)."""


def check_json(value: Any, where: str, depth: int = 0) -> Any:
    """Return ``value`` if it is plain JSON (finite numbers, str keys), else raise.

    Args:
        value: the parsed value.
        where: what the value is, for the error message.
        depth: current nesting (callers leave it at 0).

    Example:
        >>> check_json({"width": [32, 64]}, "kwargs")
        {'width': [32, 64]}
    """
    if depth > MAX_NESTING:
        raise PlainValueError(f"{where} is nested deeper than {MAX_NESTING} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PlainValueError(f"{where} holds a non-finite number {value!r}")
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]", depth + 1)
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PlainValueError(f"{where} has a non-string key {key!r}")
            check_json(item, f"{where}.{key}", depth + 1)
        return value
    raise PlainValueError(f"{where} holds a {type(value).__name__}, not plain JSON")


def is_plain_attr(value: Any, depth: int = 0) -> bool:
    """True for attribute values :func:`encode_attr` stores: scalars and tuples/lists/sets of them.

    Example:
        >>> is_plain_attr((3, 3)), is_plain_attr(object())
        (True, False)
    """
    if depth > MAX_NESTING:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list, set, frozenset)):
        return all(is_plain_attr(v, depth + 1) for v in value)
    return False


def encode_attr(value: Any) -> Any:
    """JSON form of a plain attribute value (tuples, sets and non-finite floats tagged).

    Example:
        >>> encode_attr((1, float("inf")))
        {'tuple': [1, {'float': 'inf'}]}
    """
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")}
    if isinstance(value, tuple):
        return {"tuple": [encode_attr(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        items = sorted((encode_attr(v) for v in value), key=repr)
        return {"frozenset" if isinstance(value, frozenset) else "set": items}
    if isinstance(value, list):
        return [encode_attr(v) for v in value]
    return value


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def decode_attr(value: Any, where: str, depth: int = 0) -> Any:
    """Inverse of :func:`encode_attr`; raises :class:`PlainValueError` on anything else.

    Example:
        >>> decode_attr({"tuple": [1, 2]}, "attr")
        (1, 2)
    """
    if depth > MAX_NESTING:
        raise PlainValueError(f"{where} is nested deeper than {MAX_NESTING} levels")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return check_json(value, where)
    if isinstance(value, list):
        return [decode_attr(v, where, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "float" and inner in _FLOATS:
            return _FLOATS[inner]
        if tag in ("tuple", "set", "frozenset") and isinstance(inner, list):
            items = [decode_attr(v, where, depth + 1) for v in inner]
            if tag == "tuple":
                return tuple(items)
            try:
                return set(items) if tag == "set" else frozenset(items)
            except TypeError:  # an unhashable member (a list) cannot come from encode_attr
                raise PlainValueError(f"{where}: a set holds an unhashable value") from None
    raise PlainValueError(f"{where} is not a plain attribute value ({value!r:.80})")
