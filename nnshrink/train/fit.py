"""A small, reusable training loop: seeded, resumable, with callbacks and a progress bar.

Nothing in nnshrink requires it: every technique exposes losses, callbacks and modules that fit
into a user's own loop. The CLI and recipes use this one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.modules import model_device, to_device
from ..utils.atomic import atomic_writer
from ..utils.seed import seed_everything
from .callbacks import Callback
from .distributed import is_main_process, unwrap
from .evaluate import Criterion, default_criterion, evaluate, is_class_batch

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "step", "constant")


@dataclasses.dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run (``epochs[i]`` is a dict for epoch ``i``)."""

    epochs: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def last(self) -> dict[str, Any]:
        """Metrics of the last finished epoch (empty dict before any)."""
        return self.epochs[-1] if self.epochs else {}


def make_optimizer(
    params: Iterable[nn.Parameter],
    name: str = "sgd",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> torch.optim.Optimizer:
    """Build ``sgd`` (Nesterov momentum), ``adam`` or ``adamw``.

    Args:
        params: parameters to optimize.
        name: one of ``OPTIMIZERS``.
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty (decoupled for ``adamw``).
    """
    params = [p for p in params if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")


def make_schedule(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step LR schedule: ``cosine`` to 0, ``step`` (x0.1 at 50% and 75%), or ``constant``."""
    total_steps = max(1, total_steps)
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))
        )
    if name == "step":
        milestones = [int(total_steps * 0.5), int(total_steps * 0.75)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    raise ValueError(f"unknown schedule {name!r}; choose from {SCHEDULES}")


def _autocast(device: torch.device, amp: str | None):
    import contextlib

    if amp is None:
        return contextlib.nullcontext
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


def fit(
    model: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    lr: float = 0.05,
    optimizer: str | torch.optim.Optimizer = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    criterion: Criterion | None = None,
    callbacks: Sequence[Callback] = (),
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    amp: str | None = None,
) -> History:
    """Train ``model`` in place for ``epochs`` epochs and return per-epoch metrics.

    Args:
        model: the model to train (modified in place).
        train_loader: iterable of ``(x, y)`` batches with ``len()``; a ``set_epoch`` method is
            called each epoch when present (for shuffling and distributed sampling).
        epochs: number of epochs.
        lr: peak learning rate.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"`` or a ready optimizer over the model's params.
        momentum: SGD momentum (when the optimizer is built by name).
        weight_decay: L2 penalty (when the optimizer is built by name).
        schedule: per-step LR schedule, ``"cosine"``, ``"step"`` or ``"constant"``.
        val_loader: evaluated after each epoch (``val_top1``, ``val_loss`` in the metrics).
        criterion: ``(model, x, y) -> (loss, logits)``; default cross-entropy. Distillers plug in here.
        callbacks: :class:`Callback` objects (masks, penalties, schedules).
        seed: seeds Python, NumPy and PyTorch before training.
        checkpoint: file to save the full training state to after every epoch (atomic).
        resume: continue from ``checkpoint`` if it exists, skipping the finished epochs.
        progress: show a progress bar (only when stderr is a terminal).
        amp: mixed precision, ``"bf16"`` or ``"fp16"`` (autocast on the model's device; fp16 on
            CUDA uses a gradient scaler); ``None`` trains in the parameters' dtype.

    Batches are moved to the model's device, so a model on CUDA trains from CPU loaders.

    Example:
        >>> from nnshrink import data, models
        >>> model = models.create("lenet5")  # doctest: +SKIP
        >>> fit(model, data.loader("mnist", train=True), epochs=2, lr=0.05)  # doctest: +SKIP
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if amp not in (None, "bf16", "fp16"):
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    device = model_device(model)
    autocast = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" and device.type == "cuda" else None
    seed_everything(seed)
    criterion = criterion or default_criterion
    opt = (
        optimizer
        if isinstance(optimizer, torch.optim.Optimizer)
        else make_optimizer(model.parameters(), optimizer, lr, momentum, weight_decay)
    )
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    sched = make_schedule(opt, schedule, epochs * steps_per_epoch)
    history = History()
    start_epoch = 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        # weights_only: tensors, numbers, strings and containers only; a crafted state file
        # cannot run code (torch.save'd state dicts of our optimizers and schedules all fit).
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
            raise ValueError(
                f"{checkpoint}: not a training state written by nnshrink.train.fit "
                f"({str(exc).splitlines()[0][:160]}); delete it or pass resume=False"
            ) from None
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history.epochs = list(state["history"])
        start_epoch = int(state["epoch"]) + 1
        torch.set_rng_state(state["rng"])
    for cb in callbacks:
        cb.on_train_begin(model, opt)
    step = start_epoch * steps_per_epoch
    show = progress and sys.stderr.isatty() and is_main_process()
    for epoch in range(start_epoch, epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        for cb in callbacks:
            cb.on_epoch_begin(model, epoch)
        model.train()
        loss_sum, correct, seen, t0 = 0.0, 0, 0, time.perf_counter()
        classify = True  # top-1 only means something for (N, C) logits and integer labels
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        for x, y in bar:
            x, y = to_device(x, device), to_device(y, device)
            with autocast():
                loss, logits = criterion(model, x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step}; lower the LR"
                )
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            for cb in callbacks:
                cb.on_after_backward(model)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            for cb in callbacks:
                cb.on_step_end(model, step)
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            classify = classify and is_class_batch(logits, y)
            if classify:
                correct += int((logits.detach().argmax(1) == y).sum())
            seen += len(y)
            if show:
                acc = f"{correct / max(seen, 1):.4f}" if classify else "-"
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=acc)
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_top1": correct / max(seen, 1) if classify else None,
            "lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
        }
        if val_loader is not None:
            val = evaluate(model, val_loader)
            metrics.update(val_top1=val["top1"], val_top5=val["top5"], val_loss=val["loss"])
        history.epochs.append(metrics)
        for cb in callbacks:
            cb.on_epoch_end(model, epoch, metrics)
        if checkpoint is not None and is_main_process():
            state = {
                "model": unwrap(model).state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history.epochs,
                "epoch": epoch,
                "rng": torch.get_rng_state(),
            }
            with atomic_writer(checkpoint) as f:
                torch.save(state, f)
    for cb in callbacks:
        cb.on_train_end(model)
    return history
