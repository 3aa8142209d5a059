"""Checkpoints: exact round trips (also for structurally edited and user models) and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nnshrink.io import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from nnshrink.models import create, from_reference, spec_of
from nnshrink.models.resnet import ZeroPadShortcut
from tests.conftest import TinyConvNet

DATA = Path(__file__).parent / "data"


def _assert_same_model(a, b, x):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    a.eval()
    b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", ["lenet300", "lenet5", "resnet20", "mobilenetv2"])
def test_zoo_round_trip(tmp_path, name):
    model = create(name)
    path = save_checkpoint(model, tmp_path / "m.safetensors", metrics={"top1": 0.5})
    loaded, info = load_checkpoint(path)
    assert info["metrics"] == {"top1": 0.5} and info["spec"]["name"] == name
    _assert_same_model(model, loaded, torch.randn(2, 1, 28, 28))


def test_structurally_edited_model_round_trip(tmp_path):
    """Pruned (smaller) layers and replaced submodules are rebuilt by name + edits."""
    model = create("resnet20", in_channels=1)
    block = model.layer1[0]
    block.conv1 = nn.Conv2d(16, 8, 3, 1, 1, bias=False)
    block.bn1 = nn.BatchNorm2d(8)
    block.conv2 = nn.Conv2d(8, 16, 3, 1, 1, bias=False)
    model.layer2[0].shortcut = ZeroPadShortcut(16, 32, 2)
    model.fc = nn.Sequential(nn.Linear(64, 4, bias=False), nn.Linear(4, 10))
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
    path = save_checkpoint(model, tmp_path / "edited.safetensors")
    _, info = read_checkpoint(path)
    assert set(info["spec"]["edits"]) == {"layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "fc"}
    loaded, _ = load_checkpoint(path)
    assert loaded.layer1[0].conv1.out_channels == 8
    _assert_same_model(model, loaded, torch.randn(2, 1, 28, 28))


def test_any_module_loads_with_model_argument(tmp_path):
    model = TinyConvNet()  # an unregistered class and no reference: the file cannot rebuild it
    path = save_checkpoint(model, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="model=MyModel\\(\\)"):
        load_checkpoint(path)
    target = TinyConvNet()
    loaded, _ = load_checkpoint(path, model=target)
    assert loaded is target
    assert torch.equal(target.fc.weight, model.fc.weight)
    loaded, _ = load_checkpoint(path, factory=TinyConvNet)  # or name the builder
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_trees_of_registered_layers_rebuild_without_a_model(tmp_path):
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    loaded, info = load_checkpoint(save_checkpoint(model, tmp_path / "seq.safetensors"))
    assert set(info["architecture"]) == {"module"} and info["spec"] is None
    assert torch.equal(loaded[0].weight, model[0].weight)


def test_factory_model_round_trip_and_trust(tmp_path):
    model = from_reference("tests.conftest:TinyConvNet", {"num_classes": 5})
    model.fc = nn.Linear(64, 3)  # an edit on top of the user's model
    path = save_checkpoint(model, tmp_path / "user.safetensors")
    with pytest.raises(CheckpointError, match=r"pass factory='tests.conftest:TinyConvNet' "
                                              r"\(CLI: --model tests.conftest:TinyConvNet\)"):  # fmt: skip
        load_checkpoint(path)
    x = torch.randn(2, 1, 8, 8)
    for kwargs in ({"factory": "tests.conftest:TinyConvNet"}, {"trust_code": True}):
        loaded, info = load_checkpoint(path, **kwargs)
        assert info["spec"]["factory"] == "tests.conftest:TinyConvNet"
        _assert_same_model(model, loaded, x)
        assert spec_of(loaded) == {
            "factory": "tests.conftest:TinyConvNet",
            "kwargs": {"num_classes": 5},
        }


def test_version_1_files_still_load():
    """A file written by the previous format (nnshrink before this change), kept in tests/io/data."""
    path = DATA / "v1_mlp_pruned.safetensors"
    model, info = load_checkpoint(path)
    assert info["format"] == 1 and info["metrics"] == {"top1": 0.5}
    assert model[1].out_features == 6 and info["spec"]["name"] == "mlp"
    oracle = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 10))
    oracle.load_state_dict(load_file(path))
    x = torch.randn(3, 1, 4, 4)
    assert torch.equal(model(x), oracle(x))


def test_corruption_anywhere_is_detected(tmp_path):
    """safetensors has no checksum; ours (header index + metadata + data) catches every flip."""
    path = save_checkpoint(create("mlp", widths=[4], input_size=2), tmp_path / "m.safetensors",
                           metrics={"top1": 0.5})  # fmt: skip
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    flips = [9, 8 + n // 2, 8 + n - 2, 8 + n + 1, len(data) - 1]  # header, metadata, data
    for pos in flips:
        bad = bytearray(data)
        bad[pos] ^= 0x04
        (tmp_path / "bad.safetensors").write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / "bad.safetensors")
    assert load_file(path)["1.weight"].shape == (4, 4)  # still a plain safetensors file


def test_hf_model_round_trip_with_pruned_heads(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16,
                                     max_position_embeddings=16)  # fmt: skip
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    model = from_reference(f"hf:{tmp_path / 'bert'}").eval()
    att = model.encoder.layer[0].attention.self
    for name in ("query", "key", "value"):  # keep head 0 only (4 of 8 features)
        old, new = getattr(att, name), nn.Linear(8, 4)
        new.weight.data, new.bias.data = old.weight.data[:4].clone(), old.bias.data[:4].clone()
        setattr(att, name, new)
    dense = model.encoder.layer[0].attention.output.dense
    new = nn.Linear(4, 8)
    new.weight.data, new.bias.data = dense.weight.data[:, :4].clone(), dense.bias.data.clone()
    model.encoder.layer[0].attention.output.dense = new
    att.num_attention_heads, att.all_head_size = 1, 4
    ids = torch.tensor([[1, 2, 3, 4]])
    path = save_checkpoint(model, tmp_path / "bert.safetensors")
    loaded, info = load_checkpoint(path)  # hf: directories load without trust_code
    edits = info["architecture"]["hf"]["edits"]
    assert edits["encoder.layer.0.attention.self"] == {"attrs": {"num_attention_heads": 1,
                                                                 "all_head_size": 4}}  # fmt: skip
    assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)


def test_truncated_foreign_unknown_and_newer_files(tmp_path):
    path = save_checkpoint(create("lenet300"), tmp_path / "ok.safetensors")
    data = path.read_bytes()
    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="not saved by nnshrink"):
        load_checkpoint(tmp_path / "foreign.safetensors")
    spec = {"name": "resnet1000", "kwargs": {}, "edits": {}}
    meta = {"nnshrink.format": "1", "nnshrink.spec": json.dumps(spec)}  # version 1: no checksum
    save_file({"w": torch.zeros(2)}, tmp_path / "unknown.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet1000'"):
        load_checkpoint(tmp_path / "unknown.safetensors")
    meta = {"nnshrink.format": "99", "nnshrink.spec": "null"}
    save_file({"w": torch.zeros(2)}, tmp_path / "newer.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "newer.safetensors")
    with pytest.raises(CheckpointError, match="no such"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_shape_mismatch_with_given_model(tmp_path):
    path = save_checkpoint(nn.Linear(3, 2), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match="stored shape"):
        load_checkpoint(path, model=nn.Linear(4, 2))


def test_write_is_atomic(tmp_path, monkeypatch):
    path = save_checkpoint(create("lenet300"), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(create("lenet5"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
