"""Deep Compression end to end (Han, Mao, Dally 2016): prune → share → Huffman → ``.nns``.

1. Iterative magnitude pruning with retraining (Han et al. 2015), masks kept during retraining.
2. k-means weight sharing per layer (linear init), then centroid fine-tuning: each centroid's
   gradient is the sum of its members' gradients, indices fixed, pruned weights stay zero.
3. Storage: sparse relative indices (4 bits conv, 5 bits fc, filler zeros), codebook indices,
   Huffman coding of both streams — a real ``.nns`` file, counted the paper's way and on disk.

It needs training data, so it is a function rather than a ``compress_`` handler; the same steps
are available as a recipe (see the ``deep-compression-*`` presets).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core.config import Config, ConfigError
from ..core.registry import compress_
from ..metrics import count_nonzero_params, count_params, dense_bytes
from ..pruning import MagnitudePruning, MaskCallback, make_permanent, prune_iteratively
from ..sharing import WeightSharing, strip_sharing
from ..storage import save as save_nns
from ..train import evaluate, fit

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class DeepCompression(Config):
    """Settings of the three-stage pipeline.

    Args:
        sparsity: final fraction of pruned weights for layers not in ``per_layer``.
        per_layer: ``{regex: sparsity}`` on layer names (the paper prunes the last layer less).
        prune_rounds: prune → retrain rounds (geometric schedule to the final sparsity).
        retrain_epochs: retraining epochs per round.
        final_epochs: retraining epochs of the last round (default: ``retrain_epochs``); a longer
            last round recovers the accuracy lost at the final sparsity.
        conv_bits, fc_bits: shared-value index widths (paper: 8 and 5).
        share_epochs: centroid fine-tuning epochs.
        lr: peak learning rate of retraining (cosine schedule, restarted every round).
        optimizer: ``"adam"`` or ``"sgd"`` (Nesterov momentum 0.9) for retraining.
        weight_decay: L2 penalty during retraining (pruned weights are masked, so it acts on the
            survivors only).
        share_lr: learning rate of centroid fine-tuning.
        conv_index_bits, fc_index_bits: relative-index widths of sparse positions (paper: 4 and 5).
        huffman: Huffman-code the index and position streams.

    Example:
        >>> DeepCompression(sparsity=0.92, fc_bits=5).to_dict()["type"]
        'deep-compression'
    """

    kind: ClassVar[str] = "deep-compression"
    sparsity: float = 0.92
    per_layer: dict[str, float] = dataclasses.field(default_factory=dict)
    prune_rounds: int = 3
    retrain_epochs: int = 2
    final_epochs: int | None = None
    conv_bits: int = 8
    fc_bits: int = 5
    share_epochs: int = 1
    lr: float = 1e-3
    optimizer: Literal["adam", "sgd"] = "adam"
    weight_decay: float = 0.0
    share_lr: float = 1e-4
    conv_index_bits: int = 4
    fc_index_bits: int = 5
    huffman: bool = True

    def validate(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ConfigError(f"deep-compression.sparsity must be in [0, 1), got {self.sparsity}")
        if self.prune_rounds < 1:
            raise ConfigError("deep-compression.prune_rounds must be >= 1")
        for name in ("conv_bits", "fc_bits", "conv_index_bits", "fc_index_bits"):
            if not 1 <= getattr(self, name) <= 8:
                raise ConfigError(f"deep-compression.{name} must be in 1..8")
        if self.weight_decay < 0:
            raise ConfigError("deep-compression.weight_decay must be >= 0")
        if self.retrain_epochs < 0 or self.share_epochs < 0 or (self.final_epochs or 0) < 0:
            raise ConfigError("deep-compression: epochs must be >= 0")


@dataclasses.dataclass
class DeepCompressionResult:
    """Accuracy and size after each stage, the paper-style per-layer table, the file."""

    stages: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    path: Path
    file_bytes: int
    dense_bytes: int
    stored_bytes: int
    model: nn.Module = dataclasses.field(repr=False)

    @property
    def compression_ratio(self) -> float:
        """Dense fp32 bytes / real file bytes (header included)."""
        return self.dense_bytes / self.file_bytes

    @property
    def paper_ratio(self) -> float:
        """Dense fp32 bytes / stored bytes counted as in the paper (no container header)."""
        return self.dense_bytes / self.stored_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the ``deep-compress --json`` payload)."""
        first, last = self.stages[0], self.stages[-1]
        return {
            "top1": {"before": first["top1"], "after": last["top1"],
                     "change": last["top1"] - first["top1"]},
            "compression_ratio": self.compression_ratio,
            "paper_ratio": self.paper_ratio,
            "file_bytes": self.file_bytes,
            "dense_bytes": self.dense_bytes,
            "stored_bytes": self.stored_bytes,
            "path": str(self.path),
            "stages": self.stages,
            "layers": self.layers,
        }  # fmt: skip

    def to_markdown(self) -> str:
        """Stage table and per-layer table, like the paper's Tables 1-2."""
        lines = ["| stage | top-1 | non-zero weights | bytes | compression |",
                 "|---|---:|---:|---:|---:|"]  # fmt: skip
        for s in self.stages:
            lines.append(f"| {s['stage']} | {100 * s['top1']:.2f}% | {s['nonzero']:,} | "
                         f"{s['bytes']:,} | {s['compression']:.1f}x |")  # fmt: skip
        lines += ["", "| layer | weights | kept | weight bits | index bits | stored bytes | "
                  "compression |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in self.layers:
            lines.append(f"| {r['name']} | {r['numel']:,} | {100 * r['kept']:.1f}% | "
                         f"{r['weight_bits']:.2f} | {r['index_bits']:.2f} | {r['stored_bytes']:,} | "
                         f"{r['compression']:.1f}x |")  # fmt: skip
        return "\n".join(lines)


def deep_compress(
    model: nn.Module,
    train_loader: Batches,
    test_loader: Batches,
    out_path: str | os.PathLike,
    config: DeepCompression | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DeepCompressionResult:
    """Prune (iteratively, retraining), share weights (fine-tuning centroids), write the ``.nns``.

    The caller's model is not modified: the pipeline works on a copy and returns the compressed
    model in the result (loaded back from the file, so it is exactly what the file holds).

    Args:
        model: a trained model.
        train_loader: data for retraining and centroid fine-tuning.
        test_loader: data for the accuracy after each stage.
        out_path: the ``.nns`` file to write (atomically).
        config: pipeline settings (default :class:`DeepCompression`).
        seed: training seed.
        progress: progress bars during training.
        log: receives one line per step.

    Example:
        >>> result = deep_compress(model, train, test, "lenet300.nns")  # doctest: +SKIP
        >>> print(result.to_markdown())  # doctest: +SKIP
    """
    from ..storage import load as load_nns

    config = config or DeepCompression()
    work = copy.deepcopy(model)
    dense = dense_bytes(work)
    stages: list[dict[str, Any]] = []

    def record(stage: str, m: nn.Module, size: int, seconds: float) -> None:
        top1 = evaluate(m, test_loader)["top1"]
        stages.append({"stage": stage, "top1": top1, "nonzero": count_nonzero_params(m),
                       "params": count_params(m), "bytes": size, "compression": dense / size,
                       "seconds": round(seconds, 1)})  # fmt: skip
        log(f"{stage}: top-1 {100 * top1:.2f}%, {size:,} bytes ({dense / size:.1f}x)")

    record("dense", work, dense, 0.0)
    t0 = time.perf_counter()

    def retrain(m: nn.Module, round_index: int) -> None:
        last = round_index == config.prune_rounds - 1
        epochs = config.final_epochs if last and config.final_epochs is not None else None
        epochs = config.retrain_epochs if epochs is None else epochs
        if epochs:
            fit(m, train_loader, epochs=epochs, lr=config.lr, optimizer=config.optimizer,
                weight_decay=config.weight_decay, callbacks=[MaskCallback()],
                seed=seed + round_index, progress=progress)  # fmt: skip

    prune_cfg = MagnitudePruning(sparsity=config.sparsity, per_layer=dict(config.per_layer))
    prune_iteratively(work, retrain, config.prune_rounds, prune_cfg)
    make_permanent(work)
    nonzero = sum(int((p != 0).sum()) for p in work.parameters())
    record("pruned", work, nonzero * 4, time.perf_counter() - t0)  # fp32 values, before indices

    t0 = time.perf_counter()
    compress_(work, WeightSharing(conv_bits=config.conv_bits, fc_bits=config.fc_bits))
    if config.share_epochs:
        # Shared-weight layers train their codebooks; their masks keep pruned weights at zero.
        fit(work, train_loader, epochs=config.share_epochs, lr=config.share_lr, optimizer="adam",
            weight_decay=0.0, seed=seed + 1000, progress=progress)  # fmt: skip
    strip_sharing(work)
    report = save_nns(
        work, out_path, huffman=config.huffman,
        index_bits={"conv": config.conv_index_bits, "fc": config.fc_index_bits},
        metrics={"top1_dense": stages[0]["top1"]},
    )  # fmt: skip
    path = Path(out_path)
    loaded = load_nns(path)
    file_size = path.stat().st_size
    record("shared + Huffman (.nns file)", loaded, file_size, time.perf_counter() - t0)
    layers = [dataclasses.asdict(r) for r in report.rows if r.kind in ("conv", "fc")]
    layers.append(dataclasses.asdict(report.total))
    return DeepCompressionResult(
        stages=stages, layers=layers, path=path, file_bytes=file_size, dense_bytes=dense,
        stored_bytes=report.total.stored_bytes, model=loaded,
    )  # fmt: skip
