#!/usr/bin/env bash
# The GPU checks of issue 25, as one short script for a lent GPU machine (its own Python and
# torch, no package registry): run from the repository root with the project's files.
#   bash benchmarks/gpu/check.sh            # writes $OUT (default benchmarks/results/gpu/)
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=.
PY=${PYTHON:-python}
status=0
step() { echo "== $*"; "$@" || { echo "FAILED: $*"; status=1; }; }
$PY -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"
step $PY -m pytest -q -p no:cacheprovider -m gpu tests --timeout 300 -o addopts="" 2>&1 | tee "$OUT/pytest_gpu.txt"
step $PY -m nnshrink.cli.main run benchmarks/gpu/recipe-usercode-cuda.yaml --out "$OUT/recipe" --json > "$OUT/recipe.json"
step torchrun --nproc_per_node=1 -m nnshrink.cli.main run benchmarks/gpu/recipe-usercode-cuda.yaml --out "$OUT/torchrun" --json > "$OUT/torchrun.json"
step $PY benchmarks/gpu_speedups.py --out "$OUT/gpu_speedups.json"
exit $status
