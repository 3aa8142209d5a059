"""nnshrink run / compare / export."""

from __future__ import annotations

import json

import yaml

from nnshrink.cli.main import main
from nnshrink.io import save_checkpoint
from nnshrink.models import create

from ..conftest import needs_mnist


@needs_mnist
def test_run_check_run_and_compare(tmp_path, capsys, tiny_recipe):
    tiny_recipe["stages"] = tiny_recipe["stages"][:2]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe))
    assert main(["run", str(path), "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stages"] == ["train", "prune"]
    assert main(["run", str(path), "--out", str(tmp_path / "a"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["rows"][-1]["label"] == "2:prune"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--out",
                 str(tmp_path / "cmp"), "--json"]) == 0  # fmt: skip
    compared = json.loads(capsys.readouterr().out)
    assert len(compared["runs"]) == 2 and (tmp_path / "cmp" / "pareto.png").is_file()


def test_run_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: lenet5}\ndata: mnist\nstages:\n  - train: {epochs: x}\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "stages[0] (train)" in err and len(err.strip().splitlines()) == 1
    assert main(["compare", str(tmp_path)]) == 2


def test_export_checks_against_pytorch(tmp_path, capsys):
    ckpt = save_checkpoint(create("resnet20"), tmp_path / "r.safetensors")
    out = tmp_path / "r.onnx"
    assert main(["export", str(ckpt), "--out", str(out), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert out.is_file() and payload["max_abs_diff_vs_pytorch"] < 1e-4
