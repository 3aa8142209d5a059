"""Model references: zoo names, module:callable factories, hf: directories, and their errors."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from nnshrink.models import ModelReferenceError, create, from_reference, parse_reference, spec_of
from tests.conftest import TinyConvNet


def _returns_int() -> int:
    return 3


def test_parse_reference_kinds_without_importing():
    assert parse_reference("resnet20") == ("zoo", "resnet20")
    assert parse_reference("pkg.never_imported:build") == ("factory", "pkg.never_imported:build")
    assert parse_reference("hf:/models/x") == ("hf", "/models/x")
    assert "pkg" not in sys.modules
    for bad in ("", "a:b:c", "pkg.mod:", ":fn", "1pkg:fn", "pkg mod:fn", "hf:"):
        with pytest.raises(ModelReferenceError):
            parse_reference(bad)
    with pytest.raises(
        ModelReferenceError, match="unknown model 'resnet1000'.*module.path:callable"
    ):
        parse_reference("resnet1000")


def test_zoo_reference_equals_create():
    model = from_reference("mlp", {"widths": [8], "input_size": 4})
    oracle = create("mlp", widths=[8], input_size=4)
    assert spec_of(model) == spec_of(oracle)
    assert [p.shape for p in model.parameters()] == [p.shape for p in oracle.parameters()]


def test_factory_reference_is_called_with_kwargs_and_remembered():
    model = from_reference("tests.conftest:TinyConvNet", {"num_classes": 4})
    assert isinstance(model, TinyConvNet) and model.fc.out_features == 4
    assert spec_of(model) == {"factory": "tests.conftest:TinyConvNet", "kwargs": {"num_classes": 4}}
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 4)


def test_factory_errors_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(
        ModelReferenceError, match="cannot import 'no_such_pkg_xyz.nets'.*PYTHONPATH"
    ):
        from_reference("no_such_pkg_xyz.nets:build")
    with pytest.raises(ModelReferenceError, match="has no attribute 'Nope'"):
        from_reference("tests.conftest:Nope")
    with pytest.raises(ModelReferenceError, match="returned a int, not an nn.Module"):
        from_reference("tests.models.test_factory:_returns_int")
    with pytest.raises(ModelReferenceError, match="not a callable"):
        from_reference("tests.conftest:needs_mnist.__doc__")
    with pytest.raises(ModelReferenceError, match="raised TypeError.*--model-kwargs"):
        from_reference("tests.conftest:TinyConvNet", {"width": 3})
    with pytest.raises(ModelReferenceError, match="must be a dict"):
        from_reference("tests.conftest:TinyConvNet", [1, 2])  # type: ignore[arg-type]


def test_untrusted_factory_is_not_imported(tmp_path, monkeypatch):
    (tmp_path / "sideeffect_mod.py").write_text(
        "import builtins\nbuiltins.nnshrink_side_effect = True\n"
        "from torch import nn\ndef build():\n    return nn.Linear(2, 2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelReferenceError, match="trust_code=True"):
        from_reference("sideeffect_mod:build", trust_code=False)
    assert "sideeffect_mod" not in sys.modules
    import builtins

    assert not hasattr(builtins, "nnshrink_side_effect")
    model = from_reference("sideeffect_mod:build")  # the user named it: imported
    assert isinstance(model, nn.Linear) and builtins.nnshrink_side_effect
    del builtins.nnshrink_side_effect
    sys.modules.pop("sideeffect_mod")


def test_hf_reference_errors(tmp_path):
    with pytest.raises(ModelReferenceError, match="no config.json"):
        from_reference(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelReferenceError, match="not a JSON object"):
        from_reference(f"hf:{tmp_path}")
    with pytest.raises(ModelReferenceError, match="take no kwargs"):
        from_reference(f"hf:{tmp_path}", {"x": 1})


def test_hf_directory_builds_a_transformers_class_only(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16,
                                     max_position_embeddings=16)  # fmt: skip
    oracle = transformers.BertModel(config).eval()
    oracle.save_pretrained(tmp_path)
    model = from_reference(f"hf:{tmp_path}").eval()
    assert type(model) is transformers.BertModel and spec_of(model) == {"hf": str(tmp_path)}
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(model(ids).last_hidden_state, oracle(ids).last_hidden_state)
    # a config naming something outside the transformers package is refused, not imported
    text = (tmp_path / "config.json").read_text().replace('"BertModel"', '"os.system"')
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(
        ModelReferenceError, match="not a model class of the installed transformers"
    ):
        from_reference(f"hf:{tmp_path}")
