"""Config base: dict round trips, strict keys, type checks."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import pytest

from nnshrink.core import Config, ConfigError, config_types


@dataclasses.dataclass(frozen=True)
class _Demo(Config):
    kind: ClassVar[str] = "test-demo"
    ratio: float = 0.5
    steps: int = 3
    mode: Literal["a", "b"] = "a"
    names: tuple[str, ...] = ()
    per_layer: dict[str, float] | None = None
    flag: bool = False

    def validate(self) -> None:
        if not 0 <= self.ratio < 1:
            raise ConfigError(f"ratio must be in [0, 1), got {self.ratio}")


def test_round_trip_through_dict():
    cfg = _Demo(ratio=0.25, steps=2, mode="b", names=("x", "y"), per_layer={"fc": 0.1}, flag=True)
    data = cfg.to_dict()
    assert data["type"] == "test-demo"
    assert data["names"] == ["x", "y"]
    assert Config.from_dict(data) == cfg
    assert _Demo.from_dict(data) == cfg


def test_registered_by_kind():
    assert config_types()["test-demo"] is _Demo


def test_int_accepted_for_float_and_list_for_tuple():
    cfg = Config.from_dict({"type": "test-demo", "ratio": 0, "names": ["a"]})
    assert cfg.ratio == 0.0 and isinstance(cfg.ratio, float)
    assert cfg.names == ("a",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"type": "test-demo", "ratoi": 0.1}, "unknown key"),
        ({"type": "test-demo", "steps": 1.5}, "expected an integer"),
        ({"type": "test-demo", "steps": True}, "expected an integer"),
        ({"type": "test-demo", "mode": "c"}, "is not one of"),
        ({"type": "test-demo", "ratio": 1.5}, "ratio must be in"),
        ({"type": "nope"}, "unknown type"),
        ({"ratio": 0.1}, "missing 'type'"),
        ({"type": "test-demo", "per_layer": {"fc": "x"}}, "per_layer"),
    ],
)
def test_bad_input_names_the_field(data, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(data)


def test_frozen():
    cfg = _Demo()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.ratio = 0.1  # type: ignore[misc]


def test_every_registered_config_round_trips():
    """Contract over all configs known at import time (techniques register theirs).

    Every config builds from its defaults (no required fields: a recipe stage ``{type: kind}``
    alone must run), round-trips through ``to_dict`` / JSON, is frozen, and refuses an unknown
    key with an error that names it.
    """
    import json

    import nnshrink  # noqa: F401  (imports every technique)

    kinds = config_types()
    assert {"structured-pruning", "ptq", "weight-sharing", "low-rank", "wanda"} <= set(kinds)
    for kind, cls in kinds.items():
        cfg = cls()
        assert cfg.kind == kind
        data = json.loads(json.dumps(cfg.to_dict()))
        assert Config.from_dict(data) == cfg, kind
        for field in [f for f in dataclasses.fields(cls) if f.init][:1]:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(cfg, field.name, getattr(cfg, field.name))
        with pytest.raises(ConfigError, match="not_a_field"):
            Config.from_dict({**data, "not_a_field": 1})
