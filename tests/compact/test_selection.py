import warnings

import pytest
import torch
from torch import nn

import nnshrink.compact  # noqa: F401  (registers the handler)
from nnshrink.compact import (
    CompactReplace,
    DepthwiseSeparableConv,
    FactorizedConv,
    FireConv,
    skip_reason,
)
from nnshrink.compact.selection import whole_name_patterns
from nnshrink.core import compress_


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.point = nn.Conv2d(8, 8, 1)
        self.depth = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.body = nn.Conv2d(8, 12, 3, padding=1)
        self.odd = nn.Conv2d(12, 10, 3, padding=1)
        self.unused = nn.Conv2d(10, 10, 3)

    def forward(self, x):
        return self.odd(self.body(self.depth(self.point(self.stem(x)))))


def test_include_exclude_and_filter_fn():
    x = torch.randn(1, 3, 6, 6)
    model = _Mixed()
    compress_(model, CompactReplace(block="fire", exclude=("@first", "odd")), example_inputs=x)
    assert isinstance(model.stem, nn.Conv2d) and isinstance(model.body, FireConv)
    assert isinstance(model.odd, nn.Conv2d)
    model = _Mixed()  # an exclude of one's own replaces the default ("@first",)
    compress_(model, CompactReplace(block="fire", exclude=("odd",)), example_inputs=x)
    assert isinstance(model.stem, FireConv) and isinstance(model.odd, nn.Conv2d)
    model = _Mixed()
    compress_(model, CompactReplace(block="factorized", include=("od.",)), example_inputs=x)
    assert isinstance(model.odd, FactorizedConv) and isinstance(model.body, nn.Conv2d)
    model = _Mixed()
    res = compress_(
        model,
        CompactReplace(block="dwsep"),
        example_inputs=x,
        filter_fn=lambda m, name: name != "body",
    )
    assert isinstance(model.body, nn.Conv2d) and isinstance(model.odd, DepthwiseSeparableConv)
    assert {r.name: r.reason for r in res.layers}["body"] == "rejected by filter_fn"


def test_searched_patterns_still_work_with_a_warning_and_whole_names_without():
    x = torch.randn(1, 3, 6, 6)
    model = _Mixed()
    with pytest.warns(DeprecationWarning, match=r"write '\.\*\(\?:\^od\)\.\*'"):
        compress_(model, CompactReplace(block="factorized", include=("^od",)), example_inputs=x)
    assert isinstance(model.odd, FactorizedConv) and isinstance(model.body, nn.Conv2d)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compress_(_Mixed(), CompactReplace(block="dwsep", exclude=("@first", "body")),
                  example_inputs=x)  # fmt: skip


def test_first_token_names_the_first_conv_the_model_runs_even_with_include():
    x = torch.randn(1, 3, 6, 6)
    res = compress_(_Mixed(), CompactReplace(block="dwsep", include=("body", "odd")),
                    example_inputs=x).summary  # fmt: skip
    assert res.replaced == ["body", "odd"]  # "@first" did not move on to "body"
    res = compress_(_Mixed(), CompactReplace(block="dwsep", include=("stem", "body")),
                    example_inputs=x).summary  # fmt: skip
    assert res.replaced == ["body"] and "first conv" in res.layers[0].reason


def test_skip_reason_and_the_pattern_rewrite_on_their_own():
    conv = nn.Conv2d(8, 8, 3)
    assert skip_reason("stem", conv, CompactReplace(), is_first=True).startswith("first conv")
    assert skip_reason("body", conv, CompactReplace()) is None
    assert skip_reason("body", conv, CompactReplace(exclude=("bo.*",))) == (
        "matched by exclude 'bo.*'"
    )
    assert "ReLU" in skip_reason("body", conv, CompactReplace(block="crelu"))  # nothing traced
    assert "divisible by 4" in skip_reason(
        "b", nn.Conv2d(8, 6, 3), CompactReplace(block="rotation")
    )
    names = ["layer1.0.conv1", "layer2.0.conv1"]
    with pytest.warns(DeprecationWarning, match="searched"):
        cfg = whole_name_patterns(CompactReplace(include=("layer2",), exclude=()), names)
    assert cfg.include == (".*(?:layer2).*",) and cfg.exclude == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = CompactReplace(include=("nowhere", r"layer1\.0\.conv1"))
        assert whole_name_patterns(same, names) is same
