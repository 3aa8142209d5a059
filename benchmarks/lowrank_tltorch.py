"""Latency of our CP / Tucker-2 convs against TensorLy-Torch's factorized conv at the same rank.

TensorLy-Torch (``pip install tensorly-torch``, a bench-only extra) builds a ``FactorizedConv``
from a conv with ``FactorizedConv.from_conv(conv, rank, factorization, implementation=
"factorized")``; its users report it slower than the dense conv (tensorly/torch#35). Ours is a
plain ``nn.Sequential`` of Conv2d. For conv shapes from ResNet-20 and VGG-16 (CIFAR inputs) we
take the ranks our ``rank="macs", macs_ratio=0.5`` rule picks, build both and time them
interleaved in PyTorch eager
at batch 1 and 32 (also ours on channels_last tensors; TensorLy-Torch's layer does not export to ONNX with the legacy
exporter, so eager only). Weight values do not change latency, so TensorLy-Torch layers
are built with ``decompose_weights=False`` (random factors of the right shapes).

Usage:
    python benchmarks/lowrank_tltorch.py
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

from nnshrink import compress_
from nnshrink.lowrank import LowRank
from nnshrink.metrics.latency import interleaved
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results" / "lowrank_tltorch.json"
# (label, C_in, C_out, spatial size)
SHAPES = [
    ("resnet20.layer1 16->16 @32", 16, 16, 32),
    ("resnet20.layer3 64->64 @8", 64, 64, 8),
    ("vgg16 128->128 @16", 128, 128, 16),
    ("vgg16 256->256 @8", 256, 256, 8),
    ("vgg16 512->512 @4", 512, 512, 4),
]


def ours_and_ranks(conv: nn.Conv2d, method: str, side: int) -> tuple[nn.Module, tuple[int, ...]]:
    """Our decomposition of ``conv`` at half its MACs, and the ranks chosen."""
    holder = nn.Sequential(conv)
    report = compress_(holder, LowRank(method=method, rank="macs", macs_ratio=0.5, n_iter_max=1),
                       example_inputs=torch.randn(1, conv.in_channels, side, side))  # fmt: skip
    return holder[0], report.decomposed[0].ranks


def main() -> None:
    import tltorch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    t0 = time.time()
    for label, c_in, c_out, side in SHAPES:
        for method in ("cp", "tucker"):
            torch.manual_seed(0)
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False).eval()
            dense = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False).eval()
            dense.load_state_dict(conv.state_dict())
            ours, ranks = ours_and_ranks(conv, method, side)
            rank = ranks[0] if method == "cp" else (ranks[0], ranks[1], 3, 3)
            theirs = tltorch.FactorizedConv.from_conv(
                dense, rank=rank, factorization=method, implementation="factorized",
                decompose_weights=False,
            ).eval()  # fmt: skip
            ours_cl = copy.deepcopy(ours).to(memory_format=torch.channels_last)
            row = {"shape": label, "method": method, "ranks": list(ranks)}
            for batch in (1, 32):
                x = torch.randn(batch, c_in, side, side)
                x_cl = x.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    res = interleaved(
                        {
                            "dense": lambda x=x, m=dense: m(x),
                            "ours": lambda x=x, m=ours: m(x),
                            "tltorch": lambda x=x, m=theirs: m(x),
                            "ours_cl": lambda x=x_cl, m=ours_cl: m(x),
                        },
                        rounds=args.rounds,
                        runs=args.runs,
                    )
                med = {k: v["median"] for k, v in res.items()}
                p10 = {k: v["p10"] for k, v in res.items()}
                row[f"batch{batch}"] = {
                    **{f"{k}_ms": round(v, 4) for k, v in med.items()},
                    **{f"{k}_p10_ms": round(v, 4) for k, v in p10.items()},
                    "ours_over_theirs": round(med["ours"] / med["tltorch"], 3),
                    "ours_over_theirs_p10": round(p10["ours"] / p10["tltorch"], 3),
                    "speedup_ours": round(med["dense"] / med["ours"], 3),
                    "speedup_tltorch": round(med["dense"] / med["tltorch"], 3),
                    "ours_cl_over_theirs": round(med["ours_cl"] / med["tltorch"], 3),
                }
            print(json.dumps(row), flush=True)
            rows.append(row)
    out = {
        "benchmark": "lowrank_tltorch",
        "tltorch": tltorch.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": environment(),
        "wall_s": round(time.time() - t0, 1),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
