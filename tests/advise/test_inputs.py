"""The advisor's inputs: where it selects (val, else held back from train, never test), what the
recipes can name, and the user's metric.

Oracles: the samples themselves (a held-back sample never appears in the training batches, the
test samples never in the selection), the user's own loaders and factories.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnshrink.advise.inputs import (
    count_samples,
    data_spec_of,
    recipe_model,
    resolve_data,
    resolve_model,
    resolve_task,
)
from nnshrink.data import DataBundle, DataError
from tests.usercode import error_rate, make_data, make_data_with_val


def _rows(batches) -> set[bytes]:
    return {x.numpy().tobytes() for xb, _ in batches for x in xb}


def test_val_batches_are_the_selection_when_given():
    train, test, val = make_data_with_val()
    data = resolve_data((train, test, val))
    assert data.split == "val" and data.selection is val and data.test is test
    assert data.train is train and data.train_samples == 384
    assert "validation batches" in data.note and data.spec is None


def test_without_val_a_held_back_part_of_train_is_the_selection_never_test():
    train, test = make_data()
    data = resolve_data(DataBundle(train, test), holdout=0.25, seed=3)
    assert data.split == "train-holdout" and "never trained on" in data.note
    held, trained, tested = _rows(data.selection), _rows(data.train), _rows(test)
    assert not held & trained and not held & tested  # no overlap with training or test
    assert len(held) == count_samples(data.selection) == 96  # a quarter of 384
    assert held | trained == _rows(train)  # nothing lost
    assert data.train_samples == 288
    # the split is seeded: the same seed holds back the same samples
    assert _rows(resolve_data((train, test), holdout=0.25, seed=3).selection) == held


def test_bad_data_gets_one_clear_error():
    train, test = make_data()
    with pytest.raises(DataError, match="holdout"):
        resolve_data((train, test), holdout=1.5)
    with pytest.raises(DataError, match="training batches"):
        resolve_data(DataBundle(None, test))
    with pytest.raises(DataError, match="factory"):
        data_spec_of("no such data")


def test_a_data_factory_is_named_in_the_recipe_and_read_like_the_runner():
    assert data_spec_of("tests.usercode:make_data") == {"factory": "tests.usercode:make_data"}
    data = resolve_data("tests.usercode:make_data_with_val", limit=64)
    assert data.split == "val" and data.spec["factory"] == "tests.usercode:make_data_with_val"
    assert data.spec["eval_split"] == "val" and count_samples(data.selection) == 64
    held = resolve_data("tests.usercode:make_data")
    assert held.split == "train-holdout" and not held.exact  # no recipe key holds samples back
    assert held.recipe_data(100) == {"factory": "tests.usercode:make_data"}


def test_models_by_object_or_reference_and_what_the_recipe_names():
    data = resolve_data(make_data())
    module = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    assert resolve_model(module, data) is module
    built = resolve_model("tests.usercode:make_model", data)
    assert type(built).__name__ == "TinyNet"
    spec, note = recipe_model(built, "baseline.safetensors")
    assert spec == {"checkpoint": "baseline.safetensors", "trust_code": True}
    assert "tests.usercode:make_model" in note

    class Custom(nn.Module):  # a Python object no file can rebuild
        def forward(self, x):
            return x

    spec, note = recipe_model(Custom(), "baseline.safetensors")
    assert spec is None and "run_recipe(recipe, out, model=m" in note


def test_the_users_metric_by_reference_or_callable():
    task, keys, notes = resolve_task("tests.usercode:error_rate")
    assert keys == {"metric": "tests.usercode:error_rate"} and not notes
    task, keys, notes = resolve_task(error_rate, nn.CrossEntropyLoss())
    assert not keys and len(notes) == 2
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    loss, out = task.criterion(nn.Identity(), x, y)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(x, y))  # oracle: PyTorch's own
    train, test = make_data()
    result = task.evaluate(nn.Sequential(nn.Flatten(), nn.Linear(144, 3)), test)
    assert task.headline == "error" and not task.higher_is_better and 0 <= result["error"] <= 1
