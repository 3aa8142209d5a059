"""Byte accounting: every stage's reported ``size_bytes`` is the size of the file it wrote.

One recipe per technique on the test-only user model (``tests.usercode``): the row of the
technique's stage must report exactly the bytes of its stage artefact on disk, and the final
file's bytes when a final path is given (issue 23.3: one accounting, true numbers).
"""

from __future__ import annotations

import pytest

from nnshrink.recipes.runner import run_recipe
from nnshrink.recipes.schema import parse_recipe
from tests.usercode import make_data, make_model

TECHNIQUES = {
    "magnitude-pruning": {"sparsity": 0.5},
    "structured-pruning": {"sparsity": 0.5},
    "weight-sharing": {"bits": 3},
    "ternary": {"exclude": ()},
    "binary": {"exclude": ()},
    "hashing": {"sparsity": 0.5},
    "low-rank": {"method": "tucker", "rank": "macs", "macs_ratio": 0.5},
    "ptq": {"backend": "onnxruntime", "calibration_batches": 2},
}


def _quiet(*_args, **_kwargs):
    pass


@pytest.mark.parametrize("kind", sorted(TECHNIQUES))
def test_reported_bytes_are_the_bytes_of_the_file_written(tmp_path, kind):
    train, test = make_data(batch_size=32, n=96)
    recipe = parse_recipe({
        "stages": [{kind: TECHNIQUES[kind]}, {"encode": {}}] if kind != "ptq"
        else [{kind: TECHNIQUES[kind]}],
        "measure": {"latency": False},
    })  # fmt: skip
    out = tmp_path / "run"
    result = run_recipe(recipe, out, model=make_model(width=8), data=(train, test),
                        progress=False, log=_quiet)  # fmt: skip
    # NN-stage.suffix, one per stage in order (00-original and the KD teacher aside)
    stage_files = sorted(p for p in (out / "stages").iterdir() if p.name[:2].isdigit())[1:]
    rows = [r for r in result.rows if r["label"] != "original"]
    assert len(rows) == len(stage_files), (rows, stage_files)
    for row, path in zip(rows, stage_files, strict=True):
        if row["label"].endswith(":encode"):  # the encoded artefact is the run's .nns
            path = out / "model.nns"
        assert row["size_bytes"] == path.stat().st_size, (row["label"], path.name)
    assert result.rows[0]["size_kind"] == "file"
    # counts stay those of the weights the artefact holds (an int8 session has no torch params)
    assert all(r["params"] > 0 and r["macs"] > 0 for r in result.rows)
