"""A transformer of your own: prune attention heads and MLP width, then int8 dynamic quantization.

A small ``nn.TransformerEncoder`` classifier defined here reads each MNIST image as a sequence of
28 rows and is trained for one epoch on 6,000 images (plain ``DataLoader``s).
``StructuredPruning(sparsity=0.5, head_sparsity=0.5)`` removes half the attention heads and half
the MLP width of every block (the ``nn.MultiheadAttention`` modules become prunable attention
modules holding fewer heads), one epoch of fine-tuning follows, and ``PTQ(mode="dynamic")``
turns the Linear layers into int8 dynamic Linears. Prints params, MACs, checkpoint bytes and
test accuracy at each step. More: docs/structured-pruning.md (transformers) and
docs/quantization.md (dynamic).

Run: python examples/transformer.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import nnshrink as ns


class RowTransformer(nn.Module):
    """Reads an image as a sequence of its 28 rows: embedding, ``nn.TransformerEncoder``, mean."""

    def __init__(self, dim: int = 64, heads: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(28, dim)
        self.pos = nn.Parameter(torch.zeros(1, 28, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.flatten(1, 2)) + self.pos  # (B, 1, 28, 28) -> (B, 28 rows, dim)
        return self.head(self.encoder(tokens).mean(dim=1))


def mnist_loaders(n_train: int, n_test: int) -> tuple[DataLoader, DataLoader]:
    """Plain DataLoaders over a slice of MNIST (read from local files, never downloaded)."""
    train, test = ns.data.load("mnist", "train"), ns.data.load("mnist", "test")
    norm = lambda images: (images - 0.1307) / 0.3081  # noqa: E731  (MNIST mean and std)
    train_set = TensorDataset(norm(train.images[:n_train]), train.labels[:n_train])
    test_set = TensorDataset(norm(test.images[:n_test]), test.labels[:n_test])
    return DataLoader(train_set, 64, shuffle=True), DataLoader(test_set, 500)


def measure(model: nn.Module, x: torch.Tensor, test: DataLoader, path: Path) -> dict:
    """Params, MACs per sample, bytes of the checkpoint written to ``path``, test top-1."""
    ns.save_checkpoint(model, path)
    stats = ns.profile(model, x, test, latency=False, size_bytes=path.stat().st_size)
    return {k: stats[k] for k in ("params", "macs", "size_bytes", "top1")}


def show(before: dict, after: dict) -> None:
    """One line per measurement: before -> after."""
    for key in before:
        fmt = ".4f" if isinstance(before[key], float) else ","
        print(f"{key:15} {before[key]:>12{fmt}} -> {after[key]:>12{fmt}}")


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    out = Path(tempfile.mkdtemp())
    train, test = mnist_loaders(6000, 2000)
    x = next(iter(test))[0][:1]
    model = RowTransformer()
    ns.train.fit(model, train, epochs=1, lr=5e-3, optimizer="adamw", weight_decay=0.0,
                 progress=False)  # fmt: skip
    model.eval()
    before = measure(model, x, test, out / "dense.safetensors")

    config = ns.StructuredPruning(sparsity=0.5, head_sparsity=0.5, exclude=("head",))
    result = ns.compress_(model, config, example_inputs=x)
    for row in result.summary.groups:
        print(f"  {row.kind:8} {row.modules[0]:28} {row.channels_before} -> {row.channels_after}")
    ns.train.fit(model, train, epochs=1, lr=2e-3, optimizer="adamw", weight_decay=0.0,
                 progress=False)  # fmt: skip
    model.eval()
    pruned = measure(model, x, test, out / "pruned.safetensors")
    print("structured-pruning (heads and MLP width)")
    show(before, pruned)

    result = ns.compress_(model, ns.PTQ(mode="dynamic"))
    print(f"dynamic int8: {len(result.summary.skipped)} layers left float")
    int8 = {**pruned, **{k: v for k, v in measure(model, x, test, out / "int8.safetensors").items()
                         if k in ("size_bytes", "top1")}}  # fmt: skip
    print("int8 dynamic, after pruning (params and MACs as counted before quantization)")
    show(pruned, int8)


if __name__ == "__main__":
    main()
