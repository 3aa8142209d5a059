"""Which layers a technique touches: one mechanism shared by every config.

Every config that edits layers inherits :class:`LayerSelection`, whose three fields mean the same
thing everywhere (in Python, YAML recipes and CLI flags):

* ``include``: patterns of the layers to consider (empty: every layer the technique supports);
* ``exclude``: patterns of layers to leave alone;
* ``per_layer``: ``{pattern: value}`` overrides; a number is the technique's amount for the
  matching layers (``sparsity`` for pruning, ``bits`` for quantization and sharing, ...), a
  mapping overrides any field (``{"bits": 8}``), ``None`` excludes the layer. The first pattern
  that matches wins (in the order written).

A pattern is a layer name (``"features.0"``), a regular expression that must match the whole name
(``r"layer\\d+\\.0\\.conv1"``), or a token: ``@first`` / ``@last`` (the first / last candidate layer
in module order), ``@conv`` / ``@linear`` (by layer type), ``@below:N`` (layers with fewer than
``N`` weights). This is torchao's ``FqnToConfig`` idea, with the amount as the common case.

Example:
    >>> from torch import nn
    >>> sel = LayerSelection(exclude=("@last",), per_layer={"0": 0.25})
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> [(layer.name, layer.overrides) for layer in sel.select(
    ...     model.named_children(), types=(nn.Linear,), amount_field="sparsity")]
    [('0', {'sparsity': 0.25})]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

TOKENS = ("@first", "@last", "@conv", "@linear", "@below:N")
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def _weight_numel(module: nn.Module) -> int:
    weight = getattr(module, "weight", None)
    return int(weight.numel()) if weight is not None and hasattr(weight, "numel") else 0


def check_pattern(kind: str, field: str, pattern: Any) -> None:
    """Raise :class:`~nnshrink.core.ConfigError` unless ``pattern`` is a name, regex or token."""
    from .config import ConfigError

    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"{kind}.{field}: patterns are non-empty strings, got {pattern!r}")
    if pattern.startswith("@"):
        if pattern in ("@first", "@last", "@conv", "@linear"):
            return
        if pattern.startswith("@below:") and pattern[7:].isdigit():
            return
        raise ConfigError(f"{kind}.{field}: unknown token {pattern!r}; tokens are {list(TOKENS)}")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{kind}.{field}: bad regex {pattern!r}: {exc}") from None


def matches(pattern: str, name: str, module: nn.Module | None, position: str | None) -> bool:
    """Whether ``pattern`` selects the layer ``name`` (``position``: ``first``/``last``/None).

    Example:
        >>> matches(r"layer\\d+", "layer3", None, None), matches("@first", "fc", None, "first")
        (True, True)
    """
    if pattern == "@first":
        return position in ("first", "only")
    if pattern == "@last":
        return position in ("last", "only")
    if pattern == "@conv":
        return isinstance(module, _CONV_TYPES)
    if pattern == "@linear":
        return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"
    if pattern.startswith("@below:"):
        return module is not None and _weight_numel(module) < int(pattern[7:])
    return name == pattern or re.fullmatch(pattern, name) is not None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LayerSelection:
    """The layer-selection fields every layer-editing config shares (see the module docstring).

    Args:
        include: patterns of layers to consider; empty means every supported layer.
        exclude: patterns of layers to leave alone.
        per_layer: ``{pattern: amount | {field: value} | None}``, first match wins.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    per_layer: dict[str, Any] = dataclasses.field(default_factory=dict)

    def validate_selection(self, kind: str, fields: Iterable[str]) -> None:
        """Check every pattern and every ``per_layer`` value (called by ``Config.__post_init__``)."""
        from .config import ConfigError

        names = set(fields)
        for field in ("include", "exclude"):
            for pattern in getattr(self, field):
                check_pattern(kind, field, pattern)
        if not isinstance(self.per_layer, Mapping):
            raise ConfigError(f"{kind}.per_layer: expected a mapping of pattern -> value")
        for pattern, value in self.per_layer.items():
            check_pattern(kind, "per_layer", pattern)
            if isinstance(value, Mapping):
                unknown = sorted(set(value) - names - {"skip"})
                if unknown:
                    raise ConfigError(
                        f"{kind}.per_layer[{pattern!r}]: unknown field(s) {unknown}; "
                        f"allowed: {sorted(names - {'include', 'exclude', 'per_layer'})}"
                    )
            elif value is not None and (
                not isinstance(value, int | float) or isinstance(value, bool)
            ):
                raise ConfigError(
                    f"{kind}.per_layer[{pattern!r}]: expected a number, a mapping of fields or "
                    f"null (leave the layer alone), got {value!r}"
                )

    def select(
        self,
        candidates: Iterable[tuple[str, nn.Module]],
        *,
        types: tuple[type[nn.Module], ...] | None = None,
        filter_fn: Callable[[nn.Module, str], bool] | None = None,
        amount_field: str | None = None,
    ) -> list[SelectedLayer]:
        """The candidates this selection keeps, in order, each with its ``per_layer`` overrides.

        Args:
            candidates: ``(name, module)`` pairs, e.g. ``model.named_modules()``.
            types: keep only modules of these types (before ``@first``/``@last`` are resolved).
            filter_fn: the ``compress_`` filter ``(module, name) -> bool``, applied too.
            amount_field: the field a plain number in ``per_layer`` sets (e.g. ``"sparsity"``).
        """
        pool = [
            (n, m)
            for n, m in candidates
            if (types is None or isinstance(m, types)) and (filter_fn is None or filter_fn(m, n))
        ]
        if self.include:
            pool = [
                (n, m)
                for i, (n, m) in enumerate(pool)
                if any(matches(p, n, m, _position(i, len(pool))) for p in self.include)
            ]
        out = []
        for i, (name, module) in enumerate(pool):
            position = _position(i, len(pool))
            if any(matches(p, name, module, position) for p in self.exclude):
                continue
            rule = self._rule(name, module, position)
            if rule is _SKIP:
                continue
            out.append(SelectedLayer(name, module, self._overrides(name, rule, amount_field)))
        return out

    def overrides_for(
        self, name: str, module: nn.Module | None = None, *, amount_field: str | None = None
    ) -> dict[str, Any] | None:
        """``per_layer`` overrides of one layer (``None``: the layer is excluded by ``per_layer``).

        Positional tokens (``@first``/``@last``) need the whole candidate list: use :meth:`select`.
        """
        rule = self._rule(name, module, None)
        if rule is _SKIP:
            return None
        return self._overrides(name, rule, amount_field)

    def excludes(self, name: str, module: nn.Module | None = None) -> bool:
        """Whether ``exclude`` (or a ``None`` in ``per_layer``) names this layer, or ``include``
        is given and does not (positional tokens are not resolved here)."""
        if self.include and not any(matches(p, name, module, None) for p in self.include):
            return True
        if any(matches(p, name, module, None) for p in self.exclude):
            return True
        return self._rule(name, module, None) is _SKIP

    @staticmethod
    def _overrides(name: str, rule: Any, amount_field: str | None) -> dict[str, Any]:
        if rule is None:
            return {}
        if isinstance(rule, Mapping):
            return {k: v for k, v in rule.items() if k != "skip"}
        if amount_field is None:
            raise ValueError(
                f"per_layer gives a number for {name!r}, but this technique has no amount"
            )
        return {amount_field: rule}

    def _rule(self, name: str, module: nn.Module | None, position: str | None) -> Any:
        for pattern, value in self.per_layer.items():
            if matches(pattern, name, module, position):
                if value is None or (isinstance(value, Mapping) and value.get("skip")):
                    return _SKIP
                return value
        return None


@dataclasses.dataclass(frozen=True)
class SelectedLayer:
    """One layer a technique will touch: its name, the module and its ``per_layer`` overrides."""

    name: str
    module: nn.Module
    overrides: dict[str, Any]

    def get(self, field: str, default: Any) -> Any:
        """The layer's value of ``field``: its override, else ``default`` (the config's value)."""
        return self.overrides.get(field, default)


_SKIP = object()


def _position(index: int, total: int) -> str | None:
    if total == 1:
        return "only"
    if index == 0:
        return "first"
    if index == total - 1:
        return "last"
    return None
