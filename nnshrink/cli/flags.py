"""Command-line flags generated from config fields: one vocabulary for Python, YAML and the CLI.

Every field of a technique config becomes ``--field-name`` (``round_to`` → ``--round-to``), so a
new config field is a new flag without editing the CLI. Values are read as YAML scalars
(``0.5``, ``8``, ``l2``, ``true``), lists as repeated words (``--exclude fc1 fc2``) and mappings
as JSON/YAML (``--per-layer '{"fc3": 0.5}'``); :meth:`nnshrink.core.Config.from_dict` then checks
every value against the field's type and reports every problem at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from typing import Any

import yaml

from ..core.config import Config, ConfigError
from .common import CLIError

PREFIX = "cfg_"


def _value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _mapping(text: str) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise argparse.ArgumentTypeError(f"not a JSON/YAML mapping: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a mapping like '{{\"fc3\": 0.5}}', got {text!r}"
        )
    return value


def field_help(cls: type[Config]) -> dict[str, str]:
    """``{field: description}`` read from the ``Args:`` section of the config's docstring."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    if "Args:" not in doc:
        return out
    body = doc.split("Args:", 1)[1].split("Example", 1)[0]
    current: list[str] = []
    for line in body.splitlines():
        match = re.match(r"^\s{4,8}([\w, ]+):\s*(.*)$", line)
        if match and not line.startswith(" " * 12):
            current = [n.strip() for n in match.group(1).split(",")]
            for name in current:
                out[name] = match.group(2).strip()
        elif current and line.strip():
            for name in current:
                out[name] += " " + line.strip()
    return out


def add_config_flags(
    parser: argparse.ArgumentParser,
    classes: typing.Iterable[type[Config]],
    *,
    skip: typing.Iterable[str] = (),
) -> None:
    """Add ``--field`` flags for every field of ``classes`` (the union; each flag once).

    Args:
        parser: the subcommand's parser.
        classes: the configs the command can build (e.g. every pruning config).
        skip: fields the command sets itself (or exposes under a legacy flag of its own).
    """
    # --seed is the run's own flag; it also seeds the technique (build_config passes it on)
    taken = {a.dest for a in parser._actions} | {f"{PREFIX}{name}" for name in (*skip, "seed")}
    options = {s for a in parser._actions for s in a.option_strings}
    group = parser.add_argument_group("technique settings (config fields)")
    # one flag per field name; a field several configs share (``--criterion`` of magnitude and
    # block pruning) lists every config's choices and says which config each help is for
    fields: dict[str, list[tuple[type[Config], Any, str]]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        helps = field_help(cls)
        for field in dataclasses.fields(cls):
            dest = f"{PREFIX}{field.name}"
            flag = "--" + field.name.replace("_", "-")
            if dest in taken or flag in options or not field.init:
                continue
            fields.setdefault(field.name, []).append(
                (cls, hints[field.name], helps.get(field.name, f"{cls.kind}.{field.name}"))
            )
    for name, owners in fields.items():
        hint = owners[0][1]
        texts = list(dict.fromkeys(text for _, _, text in owners))
        help_text = (
            texts[0]
            if len(texts) == 1
            else " | ".join(f"{cls.kind}: {text}" for cls, _, text in owners)
        )
        kwargs: dict[str, Any] = {"dest": f"{PREFIX}{name}", "default": None, "help": help_text}
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if hint is bool or (origin in (typing.Union, getattr(__import__("types"), "UnionType", ()))
                            and bool in args and len(args) <= 2):  # fmt: skip
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin in (tuple, list):
            kwargs.update(nargs="*", type=_value, metavar="VALUE")
        elif origin is dict:
            kwargs.update(type=_mapping, metavar="MAPPING")
        elif origin is typing.Literal:
            choices = dict.fromkeys(
                c for _, h, _ in owners if typing.get_origin(h) is typing.Literal
                for c in typing.get_args(h)
            )  # fmt: skip
            kwargs.update(type=_value, metavar="{" + ",".join(map(str, choices)) + "}")
        else:
            kwargs.update(type=_value, metavar="VALUE")
        group.add_argument("--" + name.replace("_", "-"), **kwargs)


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line (``{field: value}``)."""
    return {
        key[len(PREFIX) :]: value
        for key, value in vars(args).items()
        if key.startswith(PREFIX) and value is not None
    }


def build_config(
    kind: str, args: argparse.Namespace, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The config mapping ``{"type": kind, ...}`` from ``base`` and the given flags, validated.

    A flag that belongs to another technique of the same command is one clear error.
    """
    from ..core.config import config_types

    cls = config_types()[kind]
    fields = {f.name for f in dataclasses.fields(cls)} | set(cls.renamed)
    values = dict(base or {})
    if "seed" in fields and getattr(args, "seed", None) is not None:
        values.setdefault("seed", args.seed)
    for name, value in given_fields(args).items():
        if name not in fields:
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} does not apply to --method {kind} (its settings: "
                           f"{sorted('--' + f.replace('_', '-') for f in fields)})")  # fmt: skip
        values[name] = tuple(value) if isinstance(value, list) else value
    try:
        config = Config.from_dict({**values, "type": kind})
    except ConfigError as exc:
        raise CLIError(_flags_in(str(exc))) from None
    return config.to_dict()


def _flags_in(message: str) -> str:
    """Name the flags in a config error: ``structured-pruning.round_to`` → ``--round-to``."""
    return re.sub(r"\b[a-z][a-z-]*\.([a-z_]+)\b",
                  lambda m: f"--{m.group(1).replace('_', '-')}", message)  # fmt: skip


def family(*prefixes: str) -> list[type[Config]]:
    """The registered technique configs defined under the given package prefixes.

    Example:
        >>> "structured-pruning" in [c.kind for c in family("nnshrink.pruning")]
        True
    """
    from ..core.config import config_types
    from ..recipes.schema import _register_techniques

    _register_techniques()
    return [
        cls
        for kind, cls in sorted(config_types().items())
        if cls.__module__.startswith(prefixes) and not kind.startswith(("recipe-", "test-"))
    ]
