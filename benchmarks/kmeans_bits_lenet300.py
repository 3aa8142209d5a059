"""LeNet-300-100 on MNIST: accuracy vs bits of k-means weight sharing (Deep Compression, Fig. 6-8).

Deep Compression shares weights after pruning; this benchmark isolates the sharing step on a dense
network, as the paper's bits-per-layer figure does: train dense, then for 2..8 bits share every
layer's weights with ``WeightSharing(bits=b)`` (linear initialisation) and measure test accuracy
without and with centroid fine-tuning (``--finetune-epochs`` of
``nnshrink.sharing.finetune_shared``: Adam at 1e-4, no weight decay; only the codebooks and biases
are trainable parameters, the indices stay fixed). It also compares the three centroid
initialisations (linear / density / random) at low bit widths, as the paper does, and records
what the old ``nnshrink quantize --method kmeans --epochs 1`` fine-tuning did (SGD at lr 0.01 with
weight decay 5e-4 on the codebooks) at ``--bad-bits``.

Storage column: weight indices bit-packed at ``b`` bits (``pack_bits``) + float32 codebooks +
float32 biases, against float32 weights + biases.

Run from the repository root: ``PYTHONPATH=. .venv/bin/python benchmarks/kmeans_bits_lenet300.py``
(~5 min on 2 threads). Writes ``benchmarks/results/kmeans_bits_lenet300.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import time
from pathlib import Path

import torch

from nnshrink import data, models
from nnshrink.core import compress_
from nnshrink.sharing import WeightSharing, codebook_of, finetune_shared
from nnshrink.storage.packbits import pack_bits
from nnshrink.train import evaluate, fit
from nnshrink.utils import environment

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, object]:
    """Machine and versions for the JSON (shared helper, see nnshrink.utils.environment)."""
    return environment(seed=0)


def storage_bytes(model: torch.nn.Module, bits: int | None) -> int:
    """Float32 bytes (bits=None) or packed-index + codebook + bias bytes of a LeNet-300-100."""
    total = 0
    for module in model.modules():
        if not hasattr(module, "weight") or not isinstance(module.weight, torch.Tensor):
            continue
        if module.bias is not None:
            total += module.bias.numel() * 4
        if bits is None:
            total += module.weight.numel() * 4
        else:
            codebook, indices, mask = codebook_of(module)
            total += len(pack_bits(indices[mask], bits)) + codebook.numel() * 4
    return total


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dense-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    # Adam: a centroid's gradient sums thousands of member gradients, so plain SGD needs a
    # per-centroid step size; Adam's normalisation provides exactly that.
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7, 8])
    p.add_argument("--init-bits", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--bad-bits", type=int, default=4, help="bits of the old-CLI-settings run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="train on the first N samples only")
    p.add_argument("--out", type=Path, default=RESULTS / "kmeans_bits_lenet300.json")
    args = p.parse_args(argv)
    torch.manual_seed(0)  # initial weights too: reproducible runs
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    train = data.loader("mnist", "train", 128, train=True, limit=args.limit)
    test = data.loader("mnist", "test", 1000)
    model = models.create("lenet300")
    fit(model, train, epochs=args.dense_epochs, lr=args.lr, progress=False)
    dense = evaluate(model, test)
    dense_bytes = storage_bytes(model, None)
    print(f"dense: top1 {dense['top1']:.4f}, {dense_bytes} bytes")

    def run(bits: int, init: str, old_cli: bool = False) -> dict[str, object]:
        shared = copy.deepcopy(model)
        t0 = time.perf_counter()
        layers = compress_(shared, WeightSharing(bits=bits, init=init))
        cluster_s = time.perf_counter() - t0
        before = evaluate(shared, test)
        if old_cli:  # what `quantize --method kmeans --epochs 1` ran: fit's SGD defaults
            fit(shared, train, epochs=args.finetune_epochs, lr=0.01, optimizer="sgd",
                weight_decay=5e-4, progress=False, seed=1)  # fmt: skip
        else:
            finetune_shared(shared, train, epochs=args.finetune_epochs, lr=args.finetune_lr,
                            seed=1)  # fmt: skip
        after = evaluate(shared, test)
        size = storage_bytes(shared, bits)
        row = {
            "bits": bits,
            "init": init,
            "top1_no_finetune": before["top1"],
            "top1_finetuned": after["top1"],
            "storage_bytes": size,
            "compression": dense_bytes / size,
            "cluster_seconds": cluster_s,
            "layer_mse": {r.name: r.mse for r in layers},
        }
        print(
            f"bits {bits} init {init:7s}: top1 {before['top1']:.4f} -> finetuned "
            f"{after['top1']:.4f}, {size} bytes ({dense_bytes / size:.1f}x)"
        )
        return row

    sweep = [run(b, "linear") for b in args.bits]
    inits = [run(b, init) for b in args.init_bits for init in ("density", "random")]
    inits += [r for r in sweep if r["bits"] in args.init_bits]
    old_cli = run(args.bad_bits, "linear", old_cli=True)

    result = {
        "benchmark": "kmeans_bits_lenet300",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "dense": {"top1": dense["top1"], "storage_bytes": dense_bytes},
        "sweep_linear_init": sweep,
        "init_comparison": sorted(inits, key=lambda r: (r["bits"], r["init"])),
        "old_cli_finetune_sgd_lr0.01_wd5e-4": old_cli,
        "paper": "Deep Compression LeNet-300-100: 6 bits (after 92% pruning) at no loss, 1.58% err",
        "seconds": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(result, args.out.with_suffix(".png"))
    print(markdown(result))
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = result["sweep_linear_init"]
    bits = [r["bits"] for r in sweep]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(bits, [100 * r["top1_finetuned"] for r in sweep], "o-", label="with fine-tuning")
    ax.plot(bits, [100 * r["top1_no_finetune"] for r in sweep], "s--", label="no fine-tuning")
    ax.axhline(100 * result["dense"]["top1"], color="gray", lw=0.8, label="float32")
    ax.set_xlabel("bits per weight (all layers)")
    ax.set_ylabel("MNIST top-1 (%)")
    ax.set_title("LeNet-300-100, k-means weight sharing")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    d = result["dense"]
    lines = [
        "| bits | top-1 no fine-tune | top-1 fine-tuned | storage (bytes) | compression |",
        "|---|---|---|---|---|",
        f"| 32 (float) | {100 * d['top1']:.2f}% | – | {d['storage_bytes']} | 1.0× |",
    ]
    for r in result["sweep_linear_init"]:
        lines.append(
            f"| {r['bits']} | {100 * r['top1_no_finetune']:.2f}% "
            f"| {100 * r['top1_finetuned']:.2f}% | {r['storage_bytes']} | {r['compression']:.1f}× |"
        )
    old = result["old_cli_finetune_sgd_lr0.01_wd5e-4"]
    lines.append(f"| {old['bits']}, old CLI fine-tuning (SGD 0.01, wd 5e-4) "
                 f"| {100 * old['top1_no_finetune']:.2f}% | {100 * old['top1_finetuned']:.2f}% "
                 f"| {old['storage_bytes']} | {old['compression']:.1f}× |")  # fmt: skip
    lines += ["", "| bits | init | top-1 no fine-tune | top-1 fine-tuned |", "|---|---|---|---|"]
    for r in result["init_comparison"]:
        lines.append(
            f"| {r['bits']} | {r['init']} | {100 * r['top1_no_finetune']:.2f}% "
            f"| {100 * r['top1_finetuned']:.2f}% |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
