"""``nnshrink prune`` defaults on a user-style run: one-shot 90 % + 2 fine-tuning epochs, LeNet-300-100.

The command line as a user types it (issue 23.4): ``nnshrink train`` a LeNet-300-100 on MNIST for
2 epochs, then ``nnshrink prune --method magnitude-pruning --sparsity 0.9 --finetune-epochs 2``
with ``--scope layer`` (90 % of every layer), ``--scope global --criterion magnitude`` (one |w|
threshold) and ``--scope global --criterion lamp`` (one LAMP threshold: the defaults).
Fine-tuning takes the checkpoint's own optimizer and LR (the prune command's default). Reported:
dense and pruned top-1 on the 10,000 test images, the change in points, the non-zero fraction.

    python benchmarks/prune_cli_finetune.py        # ~30 s on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from nnshrink.cli.main import main as cli
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "prune_cli_finetune.json"
# (name, --scope, --criterion): 90 % of every layer; one |w| threshold; one LAMP threshold
VARIANTS = (("layer", "layer", "magnitude"), ("global", "global", "magnitude"),
            ("lamp", "global", "lamp"))  # fmt: skip


def run_json(args: list[str]) -> dict:
    """One CLI call with ``--json``; its report."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if cli([*args, "--json"]) != 0:
            raise SystemExit(f"nnshrink {' '.join(args)} failed")
    return json.loads(out.getvalue())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    t0 = time.perf_counter()
    result: dict = {"benchmark": "prune_cli_finetune", "environment": environment(0), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        dense = str(Path(tmp) / "dense.safetensors")
        run_json(["train", "--model", "lenet300", "--data", "mnist", "--epochs", "2",
                  "--out", dense])  # fmt: skip
        dense_top1 = run_json(["eval", dense, "--data", "mnist"])["top1"]
        result["dense_top1"] = dense_top1
        for name, scope, criterion in VARIANTS:
            report = run_json(["prune", dense, "--method", "magnitude-pruning", "--sparsity",
                               "0.9", "--scope", scope, "--criterion", criterion,
                               "--finetune-epochs", "2", "--data", "mnist", "--no-latency",
                               "--out", str(Path(tmp) / f"{name}.safetensors")])  # fmt: skip
            after = report["top1"]["after"]
            result["runs"][name] = {
                "top1": after, "change_pt": round(100 * (after - dense_top1), 2),
                "nonzero_fraction": report["nonzero_params"]["after"] / report["params"]["before"],
            }  # fmt: skip
            print(name, result["runs"][name], flush=True)
    result["goal"] = "within 0.1 pt of dense (issue 23.4)"
    result["met"] = {s: r["change_pt"] >= -0.1 for s, r in result["runs"].items()}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
