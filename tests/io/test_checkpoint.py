"""Checkpoints: exact round trips (also for structurally edited models) and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from nnshrink.io import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from nnshrink.models import create
from nnshrink.models.resnet import ZeroPadShortcut


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
    model = nn.Sequential(nn.Linear(3, 2))
    path = save_checkpoint(model, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="pass model="):
        load_checkpoint(path)
    target = nn.Sequential(nn.Linear(3, 2))
    loaded, _ = load_checkpoint(path, model=target)
    assert loaded is target
    assert torch.equal(target[0].weight, model[0].weight)


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
    meta = {"nnshrink.format": "1", "nnshrink.spec": json.dumps(spec)}
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
