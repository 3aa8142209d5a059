#!/usr/bin/env bash
# The GPU checks and experiments of issues 25 and 26, as one script for a lent GPU machine (its
# own Python and torch, no package registry), run from the repository root:
#   OUT=/tmp/gpu HINTON_BUDGET_S=330 bash benchmarks/gpu/check.sh
# 1. benchmarks/gpu_speedups.py alone on the GPU (its rows are timings);
# 2. Hinton KD on MNIST, seeds 0, 1, 2 in parallel, HINTON_BUDGET_S seconds of training each
#    (0 skips it), while the GPU tests, a recipe and torchrun --nproc_per_node=1 (as
#    `python -m torch.distributed.run`) run on CUDA beside them (correctness, not time).
# Every step is bounded by `timeout`; a failed step is reported and the others still run.
set -u
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
HINTON_BUDGET_S=${HINTON_BUDGET_S:-0}
SPEEDUP_TIMEOUT=${SPEEDUP_TIMEOUT:-150}
SPEEDUP_ARGS=${SPEEDUP_ARGS:---threads 8 --rounds 3 --runs 10}
status=0
exec 3>&1  # the step lines reach the console even when a step's output goes to a file
step() { echo "== $*" >&3; "$@" || { echo "FAILED ($?): $*" >&3; status=1; }; }

$PY -c "import torch; print(torch.__version__, torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" | tee "$OUT/device.txt"
step timeout "$SPEEDUP_TIMEOUT" $PY benchmarks/gpu_speedups.py --device "$DEVICE" $SPEEDUP_ARGS \
    --out "$OUT/gpu_speedups.json" >"$OUT/gpu_speedups.log" 2>&1
pids=()
if [ "$HINTON_BUDGET_S" != 0 ]; then
    for seed in 0 1 2; do
        $PY benchmarks/kd_mnist_hinton.py --device "$DEVICE" --threads 2 --seed "$seed" \
            --budget-s "$HINTON_BUDGET_S" --log-every 25 --out "$OUT/kd_mnist_hinton_seed$seed.json" \
            >"$OUT/hinton_seed$seed.log" 2>&1 &
        pids+=($!)
    done
fi
step timeout 300 $PY -m pytest -q -p no:cacheprovider -m gpu tests -o addopts="" --timeout 300 \
    >"$OUT/pytest_gpu.txt" 2>&1
step timeout 150 $PY -m nnshrink.cli.main run benchmarks/gpu/recipe-usercode-cuda.yaml \
    --out "$OUT/recipe" --json >"$OUT/recipe.json" 2>"$OUT/recipe.log"
step timeout 150 $PY -m torch.distributed.run --nproc_per_node=1 -m nnshrink.cli.main run \
    benchmarks/gpu/recipe-usercode-cuda.yaml --out "$OUT/torchrun" --json \
    >"$OUT/torchrun.json" 2>"$OUT/torchrun.log"
for pid in "${pids[@]}"; do
    wait "$pid" || { echo "FAILED: Hinton run (pid $pid)" >&3; status=1; }
done
exit $status
