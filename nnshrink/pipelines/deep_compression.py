"""Deep Compression end to end (Han, Mao, Dally 2016): prune → share → Huffman → ``.nns``.

1. Iterative magnitude pruning with retraining (Han et al. 2015), masks kept during retraining.
2. k-means weight sharing per layer (linear init), then centroid fine-tuning: each centroid's
   gradient is the sum of its members' gradients, indices fixed, pruned weights stay zero.
3. Storage: sparse relative indices (4 bits conv, 5 bits fc, filler zeros), codebook indices,
   Huffman coding of both streams — a real ``.nns`` file, counted the paper's way and on disk.

Two entry points, one pipeline:

* ``compress_(model, DeepCompression(), example_inputs=train_loader)`` edits ``model`` in place
  into its final form (plain layers holding the pruned, shared values) and returns the stage
  report as the summary; ``example_inputs`` is the *training data* (a loader of ``(x, y)``
  batches), or ``{"train": loader, "test": loader}`` to also measure top-1 after each stage.
  The file size is measured on a temporary ``.nns``; ``ns.save(model, path,
  **config.save_kwargs())`` writes the same bytes where you want them.
* :func:`deep_compress` leaves the caller's model alone, writes the ``.nns`` file and returns the
  model read back from it (filled into a copy of the given model, so a user's own ``nn.Module``
  needs no registered architecture).

Why a handler and not a plain settings class: ``DeepCompression`` has a ``kind`` and lives in
recipes and the CLI like every technique; with a handler it follows the same contract (in place,
all or nothing inside ``compress_``'s transaction, one result type) instead of being the one
config that ``compress_`` rejects.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..core import Config, ConfigError, LayerSelection, register_handler
from ..core.registry import compress_
from ..metrics import count_nonzero_params, count_params, dense_bytes
from ..pruning import MagnitudePruning, MaskCallback, make_permanent, prune_iteratively
from ..sharing import WeightSharing, finetune_shared, strip_sharing
from ..storage import save as save_nns
from ..train import evaluate, fit

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Log = Callable[[str], None]

__all__ = ["DeepCompression", "DeepCompressionResult", "DeepCompressionSummary", "deep_compress"]


@dataclasses.dataclass(frozen=True)
class DeepCompression(Config, LayerSelection):
    """Settings of the three-stage pipeline.

    The defaults reach 40x on disk within 0.1 point on LeNet-300-100 trained for 3 epochs
    (``tests/pipelines/test_deep_compression.py``, ``benchmarks/deep_compression_lenet300.py``).

    Args:
        sparsity: final fraction of pruned weights of the layers ``per_layer`` does not set.
        per_layer: ``{pattern: sparsity}`` (or ``{pattern: {"sparsity": s}}``, ``None`` to leave
            a layer alone); the default prunes the output layer less (Han et al. keep 26 % of
            LeNet-300-100's, 19 % of LeNet-5's, 25 % of AlexNet's).
        include, exclude: the layers to prune and share (patterns and ``@`` tokens).
        prune_rounds: prune → retrain rounds (geometric schedule to the final sparsity).
        retrain_epochs: retraining epochs per round.
        final_epochs: retraining epochs of the last round (``None``: ``retrain_epochs``); a
            longer last round recovers the accuracy lost at the final sparsity.
        conv_bits, fc_bits: shared-value index widths of conv / fully connected layers (paper:
            8 and 5).
        share_epochs: centroid fine-tuning epochs (:func:`nnshrink.sharing.finetune_shared`).
        lr: peak learning rate of retraining (cosine schedule, restarted every round).
        optimizer: ``"sgd"`` (Nesterov momentum 0.9) or ``"adam"`` for retraining.
        weight_decay: L2 penalty during retraining (pruned weights are masked, so it acts on the
            survivors only).
        share_lr: learning rate of centroid fine-tuning (Adam).
        conv_index_bits, fc_index_bits: relative-index widths of sparse positions (paper: 4, 5).
        huffman: Huffman-code the index and position streams.
        seed: training seed.

    Example:
        >>> DeepCompression(sparsity=0.92, fc_bits=5).to_dict()["type"]
        'deep-compression'
    """

    kind: ClassVar[str] = "deep-compression"
    amount_field: ClassVar[str] = "sparsity"
    sparsity: float = 0.94
    per_layer: dict[str, Any] = dataclasses.field(default_factory=lambda: {"@last": 0.75})
    prune_rounds: int = 3
    retrain_epochs: int = 2
    final_epochs: int | None = 6
    conv_bits: int = 8
    fc_bits: int = 5
    share_epochs: int = 1
    lr: float = 0.05
    optimizer: Literal["adam", "sgd"] = "sgd"
    weight_decay: float = 5e-4
    share_lr: float = 1e-4
    conv_index_bits: int = 4
    fc_index_bits: int = 5
    huffman: bool = True
    seed: int = 0

    def validate(self) -> None:
        amounts = [("sparsity", self.sparsity)]
        for pattern, value in self.per_layer.items():
            value = value.get("sparsity") if isinstance(value, Mapping) else value
            if value is not None:
                amounts.append((f"per_layer[{pattern!r}]", value))
        for name, value in amounts:
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise ConfigError(
                    f"deep-compression.{name}: sparsity must be in [0, 1), got {value}"
                )
        if self.prune_rounds < 1:
            raise ConfigError("deep-compression.prune_rounds must be >= 1")
        for name in ("conv_bits", "fc_bits", "conv_index_bits", "fc_index_bits"):
            if not 1 <= getattr(self, name) <= 8:
                raise ConfigError(f"deep-compression.{name} must be in 1..8")
        if self.weight_decay < 0:
            raise ConfigError("deep-compression.weight_decay must be >= 0")
        if self.retrain_epochs < 0 or self.share_epochs < 0 or (self.final_epochs or 0) < 0:
            raise ConfigError("deep-compression: epochs must be >= 0")
        if not (self.lr > 0 and self.share_lr > 0):
            raise ConfigError("deep-compression: lr and share_lr must be > 0")

    def save_kwargs(self) -> dict[str, Any]:
        """The :func:`nnshrink.save` options that write the file this config measures."""
        return {"huffman": self.huffman,
                "index_bits": {"conv": self.conv_index_bits, "fc": self.fc_index_bits}}  # fmt: skip


@dataclasses.dataclass
class DeepCompressionSummary:
    """Top-1 (``None`` without test data) and size after each stage, the per-layer table.

    Attributes:
        stages: ``{"stage", "top1", "nonzero", "params", "bytes", "compression", "seconds"}``
            for dense, pruned, and shared + Huffman (the ``.nns`` file).
        layers: the paper-style per-layer storage rows (and the total) of the file.
        file_bytes: the ``.nns`` file's size, header included.
        dense_bytes: the dense model's fp32 bytes.
        stored_bytes: the file's streams and codebooks without the container header.
    """

    stages: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    file_bytes: int
    dense_bytes: int
    stored_bytes: int

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
        first, last = self.stages[0]["top1"], self.stages[-1]["top1"]
        change = None if first is None or last is None else last - first
        return {
            "top1": {"before": first, "after": last, "change": change},
            "compression_ratio": self.compression_ratio,
            "paper_ratio": self.paper_ratio,
            "file_bytes": self.file_bytes,
            "dense_bytes": self.dense_bytes,
            "stored_bytes": self.stored_bytes,
            "stages": self.stages,
            "layers": self.layers,
        }

    def to_markdown(self) -> str:
        """Stage table and per-layer table, like the paper's Tables 1-2."""
        lines = ["| stage | top-1 | non-zero weights | bytes | compression |",
                 "|---|---:|---:|---:|---:|"]  # fmt: skip
        for s in self.stages:
            top1 = "–" if s["top1"] is None else f"{100 * s['top1']:.2f}%"
            lines.append(f"| {s['stage']} | {top1} | {s['nonzero']:,} | {s['bytes']:,} | "
                         f"{s['compression']:.1f}x |")  # fmt: skip
        lines += ["", "| layer | weights | kept | weight bits | index bits | stored bytes | "
                  "compression |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in self.layers:
            lines.append(f"| {r['name']} | {r['numel']:,} | {100 * r['kept']:.1f}% | "
                         f"{r['weight_bits']:.2f} | {r['index_bits']:.2f} | {r['stored_bytes']:,} | "
                         f"{r['compression']:.1f}x |")  # fmt: skip
        return "\n".join(lines)


@dataclasses.dataclass
class DeepCompressionResult(DeepCompressionSummary):
    """What :func:`deep_compress` returns: the summary, the file and the model read back from it."""

    path: Path = Path()
    model: nn.Module = dataclasses.field(default=None, repr=False)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "path": str(self.path)}


def _targets(
    model: nn.Module, config: DeepCompression, filter_fn: Callable[[nn.Module, str], bool] | None
) -> dict[str, float]:
    """``{layer name: final sparsity}`` of the layers the pipeline prunes and shares."""
    candidates = ((n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d))
    layers = config.select(candidates, filter_fn=filter_fn, amount_field="sparsity")
    if not layers:
        raise ValueError(
            "deep-compression: no nn.Linear/nn.Conv2d layer selected (check include/exclude/"
            "per_layer and filter_fn)"
        )
    if any(layer.name == "" for layer in layers):
        raise ValueError("deep-compression: pass a container model (wrap the layer)")
    return {layer.name: float(layer.get("sparsity", config.sparsity)) for layer in layers}


def _pipeline(
    work: nn.Module,
    train: Batches,
    test: Batches | None,
    config: DeepCompression,
    *,
    filter_fn: Callable[[nn.Module, str], bool] | None,
    seed: int,
    progress: bool,
    log: Log,
) -> tuple[list[dict[str, Any]], int, float]:
    """Prune and share ``work`` in place (plain layers at the end).

    Returns:
        The stages so far, the dense bytes and the ``perf_counter`` time sharing started.
    """
    targets = _targets(work, config, filter_fn)
    dense = dense_bytes(work)
    stages: list[dict[str, Any]] = []

    def record(stage: str, size: int, seconds: float) -> None:
        top1 = evaluate(work, test)["top1"] if test is not None else None
        stages.append({"stage": stage, "top1": top1, "nonzero": count_nonzero_params(work),
                       "params": count_params(work), "bytes": size, "compression": dense / size,
                       "seconds": round(seconds, 1)})  # fmt: skip
        shown = "" if top1 is None else f"top-1 {100 * top1:.2f}%, "
        log(f"{stage}: {shown}{size:,} bytes ({dense / size:.1f}x)")

    record("dense", dense, 0.0)
    t0 = time.perf_counter()

    def retrain(m: nn.Module, round_index: int) -> None:
        last = round_index == config.prune_rounds - 1
        epochs = config.final_epochs if last and config.final_epochs is not None else None
        epochs = config.retrain_epochs if epochs is None else epochs
        if epochs:
            fit(m, train, epochs=epochs, lr=config.lr, optimizer=config.optimizer,
                weight_decay=config.weight_decay, callbacks=[MaskCallback()],
                seed=seed + round_index, progress=progress)  # fmt: skip

    # exact layer names as regexes: MagnitudePruning's per_layer reads them as patterns
    prune_cfg = MagnitudePruning(
        sparsity=config.sparsity, per_layer={re.escape(n): s for n, s in targets.items()}
    )
    chosen = set(targets)
    prune_iteratively(work, retrain, config.prune_rounds, prune_cfg,
                      filter_fn=lambda m, n: n in chosen)  # fmt: skip
    make_permanent(work)
    nonzero = sum(int((p != 0).sum()) for p in work.parameters())
    record("pruned", nonzero * 4, time.perf_counter() - t0)  # fp32 values, before indices

    t_share = time.perf_counter()
    sharing = WeightSharing(
        include=tuple(re.escape(n) for n in targets),
        per_layer={"@conv": config.conv_bits, "@linear": config.fc_bits},
    )
    compress_(work, sharing, measure=False)
    if config.share_epochs:
        finetune_shared(work, train, epochs=config.share_epochs, lr=config.share_lr,
                        seed=seed + 1000, progress=progress)  # fmt: skip
    strip_sharing(work)
    return stages, dense, t_share


def _finish(
    work: nn.Module,
    stages: list[dict[str, Any]],
    dense: int,
    path: Path,
    config: DeepCompression,
    seconds: float,
    test: Batches | None,
    log: Log,
    *,
    keep_metrics: bool,
) -> DeepCompressionSummary:
    """Write ``work`` to ``path`` and add the file stage; ``work`` is what the file holds.

    ``keep_metrics`` stores the dense top-1 in the header (``deep_compress``); the handler leaves
    it out so that ``ns.save(model, path, **config.save_kwargs())`` writes the measured bytes.
    """
    top1_dense = stages[0]["top1"]
    metrics = {"top1_dense": top1_dense} if keep_metrics and top1_dense is not None else {}
    report = save_nns(work, path, metrics=metrics, **config.save_kwargs())
    size = path.stat().st_size
    top1 = evaluate(work, test)["top1"] if test is not None else None
    stages.append({"stage": "shared + Huffman (.nns file)", "top1": top1,
                   "nonzero": count_nonzero_params(work), "params": count_params(work),
                   "bytes": size, "compression": dense / size,
                   "seconds": round(seconds, 1)})  # fmt: skip
    shown = "" if top1 is None else f"top-1 {100 * top1:.2f}%, "
    log(f"shared + Huffman (.nns file): {shown}{size:,} bytes ({dense / size:.1f}x)")
    layers = [dataclasses.asdict(r) for r in report.rows if r.kind in ("conv", "fc")]
    layers.append(dataclasses.asdict(report.total))
    return DeepCompressionSummary(stages, layers, size, dense, report.total.stored_bytes)


def _data(example_inputs: Any) -> tuple[Batches, Batches | None]:
    if isinstance(example_inputs, Mapping):
        unknown = sorted(set(example_inputs) - {"train", "test"})
        if "train" not in example_inputs or unknown:
            raise ValueError(
                "deep-compression: example_inputs as a mapping takes 'train' (required) and "
                f"'test' (optional), got keys {sorted(example_inputs)}"
            )
        return example_inputs["train"], example_inputs.get("test")
    if example_inputs is None or isinstance(example_inputs, torch.Tensor | tuple):
        raise ValueError(
            "deep-compression retrains the model: pass the training data, "
            "compress_(model, DeepCompression(), example_inputs=train_loader) (a loader of "
            "(x, y) batches), or {'train': train_loader, 'test': test_loader}"
        )
    return example_inputs, None


@register_handler(DeepCompression)
def _apply(
    model: nn.Module,
    config: DeepCompression,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> DeepCompressionSummary:
    train, test = _data(example_inputs)
    stages, dense, t_share = _pipeline(model, train, test, config, filter_fn=filter_fn,
                                       seed=config.seed, progress=False,
                                       log=lambda line: None)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        return _finish(model, stages, dense, Path(tmp) / "model.nns", config,
                       time.perf_counter() - t_share, test, lambda line: None,
                       keep_metrics=False)  # fmt: skip


def deep_compress(
    model: nn.Module,
    train_loader: Batches,
    test_loader: Batches | None,
    out_path: str | os.PathLike,
    config: DeepCompression | None = None,
    *,
    seed: int | None = None,
    progress: bool = True,
    log: Log = print,
) -> DeepCompressionResult:
    """Prune (iteratively, retraining), share weights (fine-tuning centroids), write the ``.nns``.

    The caller's model is not modified: the pipeline works on a copy. The result's ``model`` is
    read back from the written file into a copy of the compressed model (so any ``nn.Module``
    works, zoo or not) and checked to hold exactly the weights that were evaluated.

    Args:
        model: a trained model (any ``nn.Module`` with ``nn.Linear``/``nn.Conv2d`` layers).
        train_loader: data for retraining and centroid fine-tuning.
        test_loader: data for the accuracy after each stage (``None``: no accuracy).
        out_path: the ``.nns`` file to write (atomically).
        config: pipeline settings (default :class:`DeepCompression`).
        seed: training seed (default ``config.seed``).
        progress: progress bars during training.
        log: receives one line per step.

    Example:
        >>> result = deep_compress(model, train, test, "lenet300.nns")  # doctest: +SKIP
        >>> print(result.to_markdown())  # doctest: +SKIP
    """
    from ..storage import load as load_nns

    config = config or DeepCompression()
    work = copy.deepcopy(model)
    stages, dense, t_share = _pipeline(work, train_loader, test_loader, config, filter_fn=None,
                                       seed=config.seed if seed is None else seed,
                                       progress=progress, log=log)  # fmt: skip
    path = Path(out_path)
    summary = _finish(work, stages, dense, path, config, time.perf_counter() - t_share,
                      test_loader, log,
                      keep_metrics=True)  # fmt: skip
    loaded = load_nns(path, model=copy.deepcopy(work))
    for name, tensor in work.state_dict().items():
        if not torch.equal(loaded.state_dict()[name], tensor):
            raise RuntimeError(f"deep_compress: {path} does not reproduce {name!r}; please report")
    fields = {f.name: getattr(summary, f.name) for f in dataclasses.fields(summary)}
    return DeepCompressionResult(**fields, path=path, model=loaded)
