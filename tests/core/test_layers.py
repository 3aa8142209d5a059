import dataclasses
from typing import Any, ClassVar

import pytest
from torch import nn

from nnshrink.core import Config, ConfigError, LayerSelection


def _model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 100),
        nn.Linear(100, 2),
    )  # fmt: skip


def _names(selection, **kwargs):
    return [layer.name for layer in selection.select(_model().named_modules(), **kwargs)]


LAYERS = (nn.Conv2d, nn.Linear)


def test_default_selects_every_layer_of_the_types():
    assert _names(LayerSelection(), types=LAYERS) == ["0", "2", "4", "5"]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"exclude": ("@first", "@last")}, ["2", "4"]),
        ({"include": ("@conv",)}, ["0", "2"]),
        ({"include": ("@linear",), "exclude": ("@first",)}, ["5"]),  # first of the included
        ({"exclude": ("@below:50",)}, ["2", "4", "5"]),  # conv 0 has 36 weights
        ({"exclude": (r"[45]",)}, ["0", "2"]),
        ({"per_layer": {"2": None}}, ["0", "4", "5"]),
        ({"per_layer": {"2": {"skip": True}}}, ["0", "4", "5"]),
    ],
)
def test_tokens_regexes_and_skips(kwargs, expected):
    assert _names(LayerSelection(**kwargs), types=LAYERS) == expected


def test_per_layer_numbers_set_the_amount_and_mappings_any_field_first_match_wins():
    sel = LayerSelection(per_layer={"@conv": 0.2, "4": {"bits": 8}, ".*": 0.9})
    got = {layer.name: layer.overrides for layer in sel.select(
        _model().named_modules(), types=LAYERS, amount_field="sparsity")}  # fmt: skip
    assert got == {"0": {"sparsity": 0.2}, "2": {"sparsity": 0.2}, "4": {"bits": 8},
                   "5": {"sparsity": 0.9}}  # fmt: skip


def test_filter_fn_applies_on_top():
    assert _names(LayerSelection(), types=LAYERS, filter_fn=lambda m, n: n != "0") == [
        "2",
        "4",
        "5",
    ]


@dataclasses.dataclass(frozen=True)
class _Demo(Config, LayerSelection):
    kind: ClassVar[str] = "test-layer-demo"
    amount_field: ClassVar[str] = "sparsity"
    renamed: ClassVar[dict[str, Any]] = {"ratio": "sparsity", "ignore": "exclude"}
    sparsity: float = 0.5


def test_config_with_selection_validates_every_pattern_and_value():
    with pytest.raises(ConfigError, match="bad regex"):
        _Demo(exclude=("(",))
    with pytest.raises(ConfigError, match="unknown token"):
        _Demo(include=("@nope",))
    with pytest.raises(ConfigError, match="unknown field"):
        _Demo(per_layer={"x": {"bits": 3}})
    with pytest.raises(ConfigError, match="expected a number"):
        _Demo(per_layer={"x": "half"})
    assert _Demo(0.3).sparsity == 0.3  # own fields stay positional, selection is keyword-only


def test_deprecated_names_map_with_a_warning_in_python_and_dicts():
    with pytest.warns(DeprecationWarning, match="test-layer-demo.ratio"):
        cfg = _Demo(ratio=0.25, ignore=("x",))
    assert cfg == _Demo(sparsity=0.25, exclude=("x",))
    with pytest.warns(DeprecationWarning):
        assert Config.from_dict({"type": "test-layer-demo", "ratio": 0.25}) == _Demo(0.25)
    with pytest.raises(ConfigError, match="not both"):
        _Demo(ratio=0.25, sparsity=0.3)


def test_from_dict_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        Config.from_dict({"type": "test-layer-demo", "sparsity": "x", "bogus": 1, "exclude": 3})
    message = str(info.value)
    assert "bogus" in message and "sparsity" in message and "exclude" in message
