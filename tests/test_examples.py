"""Every example script runs as a user would run it and prints its key result line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# script -> a line its output must contain (the compress_ result it exists to show)
EXPECTED = {
    "prune_unstructured.py": "pruned .nns file",
    "prune_structured.py": "structured-pruning:",
    "quantize_int8.py": "dynamic PTQ: layers now ['Int8DynamicLinear']",
    "weight_sharing.py": "weight-sharing: .nns file",
    "binary_ternary.py": "binary:",
    "lowrank.py": "low-rank:",
    "compact_filters.py": "compact:",
    "distill.py": "distill: student has",
    "transformer.py": "dynamic int8:",
    "recipe_user_model.py": "recipe:",
}


def test_every_family_has_an_example():
    assert all((ROOT / "examples" / name).is_file() for name in EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_example_runs(script, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert EXPECTED[script] in proc.stdout, proc.stdout[-3000:]
    assert " -> " in proc.stdout or "recipe:" in proc.stdout  # before -> after measurements
