"""Registry and compress_: dispatch on config type, in-place edits, clear errors."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from torch import nn

from nnshrink.core import Config, compress_, handler_for, register_handler


@dataclasses.dataclass(frozen=True)
class _ScaleWeights(Config):
    kind: ClassVar[str] = "test-scale-weights"
    factor: float = 2.0


@dataclasses.dataclass(frozen=True)
class _Unregistered(Config):
    kind: ClassVar[str] = "test-unregistered"


@register_handler(_ScaleWeights)
def _scale(model, config, *, example_inputs=None, filter_fn=None):
    touched = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (filter_fn is None or filter_fn(module, name)):
            module.weight.data.mul_(config.factor)
            touched.append(name)
    return touched


def test_compress_dispatches_and_edits_in_place(tiny_mlp):
    before = tiny_mlp[1].weight.detach().clone()
    result = compress_(tiny_mlp, _ScaleWeights(factor=3.0))
    assert result.summary == ["1", "3"] and result.technique == _ScaleWeights.kind
    torch.testing.assert_close(tiny_mlp[1].weight, before * 3)


def test_filter_fn_selects_layers(tiny_mlp):
    touched = compress_(tiny_mlp, _ScaleWeights(), filter_fn=lambda m, n: n == "3").summary
    assert touched == ["3"]


def test_unregistered_config_is_a_clear_error(tiny_mlp):
    with pytest.raises(KeyError, match="no handler registered for _Unregistered"):
        compress_(tiny_mlp, _Unregistered())


def test_wrong_argument_types(tiny_mlp):
    with pytest.raises(TypeError, match="nn.Module"):
        compress_("model", _ScaleWeights())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Config instance"):
        compress_(tiny_mlp, {"type": "test-scale-weights"})  # type: ignore[arg-type]


def test_double_registration_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_handler(_ScaleWeights)(lambda *a, **k: None)
    assert handler_for(_ScaleWeights()) is _scale
