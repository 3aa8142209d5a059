"""nnshrink advise: budget flags, JSON output, exit status, one-line errors."""

from __future__ import annotations

import json

from nnshrink.cli.main import main
from nnshrink.io import save_checkpoint
from nnshrink.models import create

from ..conftest import needs_mnist


@needs_mnist
def test_advise_impossible_budget_json(tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(create("lenet300"), ckpt)
    out = tmp_path / "adv"
    status = main(["advise", str(ckpt), "--data", "mnist", "--max-bytes", "0.01KB",
                   "--time-limit", "20", "--limit", "200", "--train-limit", "256",
                   "--max-candidates", "1", "--threads", "2", "--out", str(out), "--json"])  # fmt: skip
    assert status == 1  # nothing meets the budget
    payload = json.loads(capsys.readouterr().out)
    assert payload["budget"]["max_bytes"] == 10 and payload["budget"]["threads"] == 2
    assert payload["chosen"] is None and payload["closest"]["meets"] is False
    assert payload["message"].startswith("no candidate meets the budget")
    assert (out / "advice.md").is_file() and not (out / "recipe.yaml").exists()


def test_advise_errors_are_one_line(tmp_path, capsys):
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(create("lenet300"), ckpt)
    base = ["advise", str(ckpt), "--data", "mnist", "--out", str(tmp_path / "o")]
    assert main([*base, "--max-bytes", "20XB"]) == 2
    err = capsys.readouterr().err
    assert "cannot read size '20XB'" in err and len(err.strip().splitlines()) == 1
    assert main([*base, "--max-drop", "1"]) == 2
    assert "at least one of" in capsys.readouterr().err
    assert main(["advise", str(tmp_path / "missing.safetensors"), "--data", "mnist",
                 "--max-macs", "1000", "--out", str(tmp_path / "o")]) == 2  # fmt: skip


def test_advise_max_drop_in_points_for_top1_is_refused_with_the_fix(tmp_path, capsys):
    """top-1 is a fraction: --max-drop 6 (the old "points") can never bind; the error gives 0.06."""
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(create("lenet300"), ckpt)
    status = main(["advise", str(ckpt), "--data", "mnist", "--max-bytes", "20KB", "--max-drop",
                   "6", "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err
    assert status == 2 and "--max-drop 0.06" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
