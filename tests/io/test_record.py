"""Architecture records: what files store, and the trust rules of the rebuild."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from nnshrink.io import ArchitectureError, UntrustedCodeError, architecture_of, rebuild
from nnshrink.io.shapes import signature
from nnshrink.models import ModelReferenceError, create, from_reference, spec_of
from tests.conftest import TinyConvNet

BUDGET = 1 << 24


def test_records_by_kind():
    zoo = create("mlp", widths=[8], input_size=4)
    zoo[1] = nn.Linear(16, 5)
    zoo[3] = nn.Linear(5, 10)
    rec = architecture_of(zoo)
    assert (
        set(rec) == {"zoo"}
        and rec["zoo"]["name"] == "mlp"
        and set(rec["zoo"]["edits"]) == {"1", "3"}
    )
    fac = from_reference("tests.conftest:TinyConvNet", {"num_classes": 3})
    assert architecture_of(fac) == {
        "factory": {"ref": "tests.conftest:TinyConvNet", "kwargs": {"num_classes": 3}, "edits": {}}
    }
    assert set(architecture_of(nn.Sequential(nn.Linear(2, 2)))) == {"module"}
    assert architecture_of(TinyConvNet()) is None  # unregistered class, no reference


def test_non_json_factory_kwargs_fall_back():
    model = from_reference("tests.conftest:TinyConvNet")
    model.nnshrink_spec["kwargs"] = {"x": object()}
    assert architecture_of(model) is None


def test_factory_record_needs_the_user_word():
    model = from_reference("tests.conftest:TinyConvNet", {"num_classes": 3})
    model.fc = nn.Linear(64, 2)
    rec, stored = architecture_of(model), signature(model)
    with pytest.raises(UntrustedCodeError) as info:
        rebuild(rec, stored, budget_bytes=BUDGET)
    assert str(info.value) == (
        "this file was saved from a model built by 'tests.conftest:TinyConvNet'; pass "
        "factory='tests.conftest:TinyConvNet' (CLI: --model tests.conftest:TinyConvNet) or "
        "trust_code=True (CLI: --trust-code)"
    )
    for kwargs in ({"factory": "tests.conftest:TinyConvNet"}, {"factory": TinyConvNet},
                   {"trust_code": True}):  # fmt: skip
        back = rebuild(rec, stored, budget_bytes=BUDGET, **kwargs)
        assert isinstance(back, TinyConvNet) and back.fc.out_features == 2
        assert spec_of(back) == {
            "factory": "tests.conftest:TinyConvNet",
            "kwargs": {"num_classes": 3},
        }


def test_hostile_factory_is_never_imported_untrusted():
    rec = {"factory": {"ref": "antigravity:fly", "kwargs": {}, "edits": {}}}
    before = set(sys.modules)
    with pytest.raises(UntrustedCodeError, match="antigravity:fly"):
        rebuild(rec, {}, budget_bytes=BUDGET)
    assert set(sys.modules) == before
    with pytest.raises(ArchitectureError, match="not 'module.path:callable'"):
        rebuild({"factory": {"ref": "os.system('x')", "edits": {}}}, {}, budget_bytes=BUDGET,
                trust_code=True)  # fmt: skip


def test_given_factory_wins_but_weights_must_fit():
    model = create("mlp", widths=[8], input_size=4)
    rec, stored = architecture_of(model), signature(model)
    other = rebuild(rec, stored, budget_bytes=BUDGET, factory="mlp")
    assert spec_of(other)["name"] == "mlp"
    with pytest.raises(ArchitectureError, match="weights do not match"):
        rebuild(rec, stored, budget_bytes=BUDGET, factory=lambda **kw: nn.Linear(2, 2))
    with pytest.raises(ModelReferenceError, match="cannot import"):  # the user's own typo
        rebuild(rec, stored, budget_bytes=BUDGET, factory="no_such_pkg_xyz:build")


@pytest.mark.parametrize(
    "rec, match",
    [
        ({"zoo": {"name": "resnet1000", "edits": {}}}, "unknown architecture 'resnet1000'"),
        ({"zoo": {"name": "mlp", "kwargs": {"widths": [10**7, 10**7]}}}, "stored shape|missing"),
        ({"zoo": {"name": "mlp", "kwargs": {"widths": "x" * 5}}}, "cannot be checked|Error"),
        ({"zoo": {"name": "mlp", "code": 1}}, "unknown fields"),
        ({"zoo": {"name": "mlp", "kwargs": [1]}}, "not a mapping"),
        ({"hf": {"dir": "/nonexistent/nnshrink"}}, "no config.json"),
        ({"exec": {}}, "one key of"),
        ({"zoo": {}, "hf": {}}, "one key of"),
        ({"module": {"class": "builtins.eval"}}, "allow-list"),
        (None, "stores no architecture"),
    ],
)  # fmt: skip
def test_bad_records_are_refused(rec, match):
    stored = signature(create("mlp", widths=[8], input_size=4))
    with pytest.raises(ArchitectureError, match=match):
        rebuild(rec, stored, budget_bytes=BUDGET)


def test_zoo_with_huge_kwargs_is_refused_before_allocation():
    """The sizes match the header (crafted consistently), but not what the file justifies."""
    stored = {"1.weight": ((10**6, 10**6), torch.float32), "1.bias": ((10**6,), torch.float32),
              "3.weight": ((10, 10**6), torch.float32), "3.bias": ((10,), torch.float32)}  # fmt: skip
    rec = {"zoo": {"name": "mlp", "kwargs": {"widths": [10**6], "input_size": 1000}, "edits": {}}}
    with pytest.raises(ArchitectureError, match="more than the file justifies"):
        rebuild(rec, stored, budget_bytes=BUDGET)
