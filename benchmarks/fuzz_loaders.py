"""Independent fuzz run of the .nns and .safetensors readers (issue 23's acceptance test).

Protocol: several base files (zoo models with structural and attribute edits, pruned + shared
weights, binary/ternary layers, a user-factory model), each in both formats, and for each seed
truncations at random offsets, single bit flips, the crafted headers of
``nnshrink.storage.fuzz`` (hostile class names and factories, huge shapes, out-of-range fields,
bad offsets, JSON bombs, all with recomputed checksums) and random single-field mutations.
Every case is loaded without a model (the reader rebuilds it, as ``nnshrink eval FILE`` does)
and must be refused with FormatError / CheckpointError. Counted: imports (new ``sys.modules``
entries), code execution (a marker file hostile headers try to create), silent loads,
failures of another exception type, and the peak Python/numpy allocation per file byte.

Usage: nice -n 10 python benchmarks/fuzz_loaders.py [--seeds 20] [--out benchmarks/results/fuzz_loaders.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from nnshrink.io import CheckpointError, load_checkpoint, save_checkpoint
from nnshrink.models import create, from_reference
from nnshrink.storage import FormatError, load, save
from nnshrink.storage.fuzz import HOSTILE_MODULES, mutations, run_case, warm_up
from nnshrink.utils import environment

ROOT = Path(__file__).resolve().parents[1]


def _share(w: torch.Tensor, sparsity: float, levels: int) -> None:
    with torch.no_grad():
        w[w.abs() < w.abs().flatten().quantile(sparsity)] = 0
        nz = w != 0
        table = torch.linspace(float(w[nz].min()), float(w[nz].max()), levels)
        w[nz] = table[(w[nz][:, None] - table).abs().argmin(dim=1)]


def base_models() -> dict[str, tuple[nn.Module, dict]]:
    """Name -> (model, .nns save options)."""
    torch.manual_seed(0)
    mlp = create("mlp", widths=[24, 16], input_size=6)
    _share(mlp[1].weight, 0.8, 8)
    with torch.no_grad():
        mlp[3].weight.copy_(0.3 * torch.randint(-1, 2, mlp[3].weight.shape))
    mlp[5] = nn.Linear(16, 4)
    mlp[2].note = "edited"
    lenet = create("lenet5")
    for m in lenet.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            _share(m.weight, 0.9, 16)
    resnet = create("resnet20", in_channels=1)
    block = resnet.layer1[0]
    block.conv1, block.bn1 = nn.Conv2d(16, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8)
    block.conv2 = nn.Conv2d(8, 16, 3, 1, 1, bias=False)
    binary = nn.Sequential(nn.Flatten(), nn.Linear(16, 8, bias=False), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        binary[1].weight.copy_(0.5 * torch.sign(torch.randn(8, 16)))
    sys.path.insert(0, str(ROOT))
    user = from_reference("tests.conftest:TinyConvNet", {"num_classes": 3})
    user.fc = nn.Linear(64, 2)
    return {
        "mlp-edited-mixed": (mlp, {"encoding": {"3.weight": "ternary"}, "min_numel": 8}),
        "lenet5-pruned-shared": (lenet, {}),
        "resnet20-pruned-block": (resnet, {}),
        "binary-sequential": (binary, {"min_numel": 8}),
        "user-factory": (user, {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--truncations", type=int, default=40)
    parser.add_argument("--flips", type=int, default=60)
    parser.add_argument("--fields", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/fuzz_loaders.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    warm_up()
    work = Path(tempfile.mkdtemp(prefix="nnshrink-fuzz-"))
    files = {}
    for name, (model, opts) in base_models().items():
        save(model, work / f"{name}.nns", **opts)
        save_checkpoint(model, work / f"{name}.safetensors")
        load(work / f"{name}.nns", trust_code=True)  # valid files load (and warm every path)
        load_checkpoint(work / f"{name}.safetensors", trust_code=True)
        files[name] = {fmt: (work / f"{name}.{fmt}").read_bytes() for fmt in ("nns", "safetensors")}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    readers = {"nns": (load, FormatError), "safetensors": (load_checkpoint, CheckpointError)}
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    findings, worst_ratio, worst = [], 0.0, None
    t0 = time.perf_counter()
    for name, by_fmt in files.items():
        for fmt, data in by_fmt.items():
            reader, expected = readers[fmt]
            for seed in range(args.seeds):
                for kind, label, bad in mutations(data, fmt, work, seed=seed, truncations=args.truncations,
                                                  flips=args.flips, fields=args.fields):  # fmt: skip
                    o = run_case(kind, label, bad, reader, expected, work)
                    key = f"{fmt}/{kind}"
                    counts[key]["cases"] += 1
                    counts[key][o.result] += 1
                    counts[key]["imports"] += bool(o.new_modules)
                    counts[key]["code_ran"] += o.code_ran
                    ratio = o.peak_bytes / max(o.file_bytes, 1)
                    if o.file_bytes > 1000 and ratio > worst_ratio:
                        worst_ratio, worst = ratio, f"{name} {fmt} {label}: {o.peak_bytes} B peak"
                    if o.result != "refused" or o.new_modules or o.code_ran:
                        findings.append({"file": name, "format": fmt, "kind": kind, "label": label,
                                         "result": o.result, "error": o.error,
                                         "new_modules": o.new_modules[:10]})  # fmt: skip
    seconds = time.perf_counter() - t0
    total = collections.Counter()
    for c in counts.values():
        total.update(c)
    summary = {
        "cases": total["cases"],
        "refused": total["refused"],
        "silent_loads": total["loaded"],
        "non_format_errors": total["error"],
        "imports": total["imports"],
        "code_executions": total["code_ran"],
        "hostile_modules_imported": [m for m in HOSTILE_MODULES if m in sys.modules],
        "peak_alloc_per_file_byte_max_over_files_above_1kB": round(worst_ratio, 2),
        "peak_alloc_worst_case": worst,
        "max_rss_growth_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before,
        "seconds": round(seconds, 1),
    }
    result = {
        "experiment": "fuzz_loaders",
        "environment": environment(seed=0),
        "protocol": {
            "seeds": args.seeds,
            "truncations_per_seed": args.truncations,
            "flips_per_seed": args.flips,
            "field_mutations_per_seed": args.fields,
            "crafted_headers": "nnshrink.storage.fuzz (same list every seed)",
            "base_files": {
                name: {fmt: len(d) for fmt, d in by.items()} for name, by in files.items()
            },
            "loaders": "nnshrink.storage.load(path), nnshrink.io.load_checkpoint(path), no model=",
            "memory": "tracemalloc peak per load (Python objects and numpy buffers; torch's "
            "CPU allocator is not traced, hence max_rss_growth_kb as a second check)",
        },  # fmt: skip
        "summary": summary,
        "by_format_and_kind": {k: dict(v) for k, v in sorted(counts.items())},
        "findings": findings[:50],
        "goal": "0 imports, 0 silent loads, 0 non-FormatError failures",
        "goal_met": summary["silent_loads"]
        == summary["non_format_errors"]
        == summary["imports"]
        == summary["code_executions"]
        == 0,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
