"""Config base: frozen dataclasses that round-trip through plain dicts (and so YAML).

Every technique describes its parameters with one subclass of :class:`Config`. The class attribute
``kind`` is the name used in YAML recipes and on the command line; the registry maps it back to
the class, so a recipe is just ``{"type": kind, **fields}``.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import typing
from collections.abc import Iterable
from typing import Any, ClassVar

_CONFIG_TYPES: dict[str, type[Config]] = {}


class ConfigError(ValueError):
    """A config (or recipe stage) has an unknown key, a wrong type or a bad value."""


def check_regexes(kind: str, patterns: Iterable[str]) -> None:
    r"""Raise :class:`ConfigError` naming ``kind`` and the pattern if one is not a valid regex.

    Example:
        >>> check_regexes("demo", [r"^layer\d+", "fc"])
        >>> check_regexes("demo", ["("])
        Traceback (most recent call last):
        ...
        nnshrink.core.config.ConfigError: demo: bad regex '(': missing ), unterminated subpattern at position 0
    """
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{kind}: bad regex {pattern!r}: {exc}") from None


class _ConfigType(type):
    """Metaclass translating deprecated field names (``renamed``) before ``__init__`` runs."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        renamed = cls.__dict__.get("renamed") or getattr(cls, "renamed", None)
        if renamed and kwargs:
            from .._deprecated import renamed_fields

            kwargs = renamed_fields(cls.kind or cls.__name__, kwargs, renamed)
        return super().__call__(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class Config(metaclass=_ConfigType):
    """Base class for technique configs.

    Subclasses are frozen dataclasses with a unique ``kind`` class attribute. They are registered
    for ``from_dict`` automatically when defined.

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class Halve(Config):
        ...     kind: ClassVar[str] = "halve-doc"
        ...     ratio: float = 0.5
        >>> Config.from_dict({"type": "halve-doc", "ratio": 0.25})
        Halve(ratio=0.25)
    """

    kind: ClassVar[str] = ""
    #: ``{deprecated field: new field}`` (or ``old: fn(value) -> {new: value}``); see
    #: :func:`nnshrink._deprecated.renamed_fields`.
    renamed: ClassVar[dict[str, Any]] = {}
    #: the field a plain number in ``per_layer`` sets (configs with a :class:`LayerSelection`).
    amount_field: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind:
            _CONFIG_TYPES[kind] = cls

    def __post_init__(self) -> None:
        from .layers import LayerSelection

        if isinstance(self, LayerSelection):
            self.validate_selection(self.kind, (f.name for f in dataclasses.fields(self)))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` when a field value is out of range (override in subclasses)."""

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"type": kind, field: value, ...}`` with enums and tuples made plain."""
        out: dict[str, Any] = {"type": self.kind}
        for field in dataclasses.fields(self):
            out[field.name] = _plain(getattr(self, field.name))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build a config from a dict; ``type`` selects the class when called on :class:`Config`.

        Unknown keys and wrong types raise :class:`ConfigError` naming the field and what is allowed.
        """
        data = dict(data)
        kind = data.pop("type", None)
        target: type[Config] = cls
        if cls is Config or (kind is not None and kind != cls.kind):
            if kind is None:
                raise ConfigError(f"missing 'type'; known types: {sorted(_CONFIG_TYPES)}")
            if kind not in _CONFIG_TYPES:
                raise ConfigError(f"unknown type {kind!r}; known types: {sorted(_CONFIG_TYPES)}")
            target = _CONFIG_TYPES[kind]
        if target.renamed:
            from .._deprecated import renamed_fields

            data = renamed_fields(target.kind, data, target.renamed)
        fields = {f.name: f for f in dataclasses.fields(target)}
        errors = []
        unknown = sorted(set(data) - set(fields))
        if unknown:
            errors.append(f"{target.kind}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        hints = typing.get_type_hints(target)
        kwargs = {}
        for name, value in data.items():
            if name not in fields:
                continue
            try:
                kwargs[name] = _coerce(target.kind, name, hints[name], value)
            except ConfigError as exc:
                errors.append(str(exc))
        missing = sorted(
            name
            for name, f in fields.items()
            if f.init
            and name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            errors.append(f"{target.kind}: missing required field(s) {missing}")
        if errors:
            # every problem at once, each naming its field (as pydantic does)
            raise ConfigError("; ".join(errors))
        try:
            return target(**kwargs)
        except TypeError as exc:  # missing required fields
            raise ConfigError(f"{target.kind}: {exc}") from exc


def config_types() -> dict[str, type[Config]]:
    """Return a copy of the ``kind -> config class`` table."""
    return dict(_CONFIG_TYPES)


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Config):
        return value.to_dict()
    return value


def _coerce(kind: str, name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the type hint, converting the few lossless cases YAML needs."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        errors = []
        for option in args:
            try:
                return _coerce(kind, name, option, value)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{kind}.{name}: {value!r} matches none of {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{kind}.{name}: expected None, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{kind}.{name}: {value!r} is not one of {list(args)}")
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = [m.value for m in hint]
            raise ConfigError(f"{kind}.{name}: {value!r} is not one of {allowed}") from None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{kind}.{name}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(kind, name, item, v) for v in value)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{kind}.{name}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(kind, name, item, v) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{kind}.{name}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {_coerce(kind, name, kt, k): _coerce(kind, name, vt, v) for k, v in value.items()}
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{kind}.{name}: expected a number, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{kind}.{name}: expected an integer, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{kind}.{name}: expected true/false, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{kind}.{name}: expected a string, got {value!r}")
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return hint.from_dict(value)
        raise ConfigError(f"{kind}.{name}: expected a mapping for {hint.__name__}")
    return value
