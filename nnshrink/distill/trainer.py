"""One-call distillation with :func:`nnshrink.train.fit`, including stage-wise FitNets.

FitNets (Romero et al. 2015) trains in two stages: first the student's layers up to the guided
layer (plus the regressor) learn to predict the teacher's hint layer; then the whole student is
trained with KD. Other methods train jointly in one stage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..train import History, fit
from .distiller import Distiller


@dataclasses.dataclass
class DistillResult:
    """What :func:`distill` did: the trained student and the per-epoch histories."""

    student: nn.Module
    distiller: Distiller
    history: History
    hint_history: History | None = None


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    method: str = "kd",
    epochs: int = 10,
    features: Mapping[str, str] | None = None,
    example_inputs: Any = None,
    hint_epochs: int | None = None,
    val_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    temperature: float = 4.0,
    alpha: float | None = None,
    beta: float = 1000.0,
    gamma: float = 3000.0,
    hint_weight: float = 1.0,
    layer_map: str | Mapping[int, int] | None = None,
    hidden_weight: float | None = None,
    attention_weight: float = 1.0,
    attention_loss: str | None = None,
    relation_heads: int | None = None,
    output_loss: str = "kd",
    **fit_kwargs: Any,
) -> DistillResult:
    """Distill ``teacher`` into ``student`` (trained in place) and return the histories.

    Args:
        teacher: trained model; frozen and kept in eval mode.
        student: model to train, in place.
        train_loader: ``(x, y)`` batches on the models' device.
        method: one of :data:`~nnshrink.distill.METHODS` (see :class:`Distiller`).
        epochs: epochs of the (final) distillation stage.
        features: ``{student_name: teacher_name}``; automatic when ``None``.
        example_inputs: small batch for shape checks; defaults to 2 samples of the first batch.
        hint_epochs: FitNets stage-1 epochs (default ``max(1, epochs // 4)``); ignored otherwise.
        val_loader: evaluated after each epoch.
        temperature, alpha, beta, gamma, hint_weight: loss settings (see :class:`Distiller`).
        layer_map, hidden_weight, attention_weight, attention_loss, relation_heads,
            output_loss: transformer-method settings (see :class:`Distiller`). ``fit`` scores
            ``(N, K)`` classification logits; for language models and sentence encoders, train
            with ``Distiller.loss`` in your own loop.
        **fit_kwargs: passed to :func:`nnshrink.train.fit` (``lr``, ``optimizer``,
            ``weight_decay``, ``schedule``, ``seed``, ``progress``, ``callbacks``...).

    Example:
        >>> res = distill(teacher, student, loader, method="at", epochs=5)  # doctest: +SKIP
        >>> res.history.last["val_top1"]  # doctest: +SKIP
    """
    if example_inputs is None:
        x, _ = next(iter(train_loader))
        example_inputs = x[:2]
    distiller = Distiller(
        teacher,
        student,
        method,
        features,
        example_inputs=example_inputs,
        temperature=temperature,
        alpha=alpha,
        beta=beta,
        gamma=gamma,
        hint_weight=hint_weight,
        layer_map=layer_map,
        hidden_weight=hidden_weight,
        attention_weight=attention_weight,
        attention_loss=attention_loss,
        relation_heads=relation_heads,
        output_loss=output_loss,
    )
    hint_history = None
    if method == "fitnets":
        distiller.stage = "hint"
        n_hint = max(1, epochs // 4) if hint_epochs is None else hint_epochs
        # resumable checkpoints belong to the final stage; callbacks (masks...) run in both
        hint_fit = {k: v for k, v in fit_kwargs.items() if k not in ("checkpoint", "resume")}
        hint_history = fit(
            distiller, train_loader, epochs=n_hint, criterion=distiller.criterion, **hint_fit
        )
        distiller.stage = "kd"
    history = fit(
        distiller,
        train_loader,
        epochs=epochs,
        val_loader=val_loader,
        criterion=distiller.criterion,
        **fit_kwargs,
    )
    distiller.stage = "joint"
    return DistillResult(student, distiller, history, hint_history)
