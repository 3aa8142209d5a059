"""Transformer distillation losses as pure functions (student first, teacher second).

* :func:`hidden_state_loss`: TinyBERT's hidden-state term (Jiao et al. 2020, eq. 8),
  ``MSE(H_s W_h, H_t)`` with a learned projection ``W_h`` when the widths differ, averaged over
  the real (unpadded) tokens.
* :func:`attention_relation` + :func:`relation_kl_loss`: self-attention distributions
  ``softmax(Q Kᵀ / √d)`` per head and the KL divergence between teacher's and student's
  (MiniLM, Wang et al. 2020, eq. 6-7). With ``relation(V, V)`` the same pair gives MiniLM's
  value-relation term. Heads are *relation heads* (MiniLMv2, Wang et al. 2021): the projection
  is split into ``R`` equal chunks whatever its width, so a student whose heads were pruned
  (fewer, or narrower, heads) still compares ``R`` maps of ``T x T`` with its teacher. With
  ``R`` equal to the teacher's head count and an unpruned layer, the relations are exactly the
  model's attention probabilities.
* :func:`attention_score_mse`: TinyBERT's attention term, MSE between the (pre-softmax)
  attention scores, over the positions attention may look at.
* :func:`output_loss`: the prediction-layer term: soft cross-entropy (``"kd"``, per token for
  ``(N, T, V)`` logits), or ``"mse"`` / ``"cosine"`` for embedding outputs.
* :func:`uniform_layer_map` / :func:`last_layer_map`: TinyBERT's ``g(m) = m N / M`` and
  MiniLM's last-layer-only pairing.

Masks: ``attention_mask`` is ``(N, T)`` with 1 for real tokens; ``causal`` hides later positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .losses import kd_loss

OUTPUT_LOSSES = ("kd", "mse", "cosine", "none")
# a finite "minus infinity": exp() underflows to 0 but differences stay finite (no NaN in KL)
_MASKED = -1e9


def _token_weights(x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    if attention_mask.shape != x.shape[:2]:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} does not match the (N, T) of "
            f"features {tuple(x.shape)}"
        )
    return attention_mask.to(x.dtype)


def hidden_state_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    projection: Callable[[torch.Tensor], torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between (projected) student and teacher hidden states.

    Args:
        student: ``(N, T, d_s)`` student hidden states.
        teacher: ``(N, T, d_t)`` teacher hidden states.
        projection: maps ``d_s`` to ``d_t`` (TinyBERT's learned ``W_h``); ``None`` when equal.
        attention_mask: ``(N, T)``; padded tokens (0) are left out of the mean.

    Returns:
        ``sum over real tokens and features of (s - t)² / (real tokens * d_t)``.

    Example:
        >>> s, t = torch.ones(1, 3, 2), torch.zeros(1, 3, 2)
        >>> hidden_state_loss(s, t, attention_mask=torch.tensor([[1, 1, 0]])).item()
        1.0
    """
    s = student if projection is None else projection(student)
    if s.shape != teacher.shape:
        raise ValueError(
            f"hidden_state_loss: student {tuple(s.shape)} (after the projection) and teacher "
            f"{tuple(teacher.shape)} differ; give a projection from the student's width to the "
            f"teacher's (the Distiller builds one when example_inputs are given)"
        )
    sq = (s - teacher).pow(2)
    w = _token_weights(teacher, attention_mask)
    if w is None:
        return sq.mean()
    return (sq * w.unsqueeze(-1)).sum() / (w.sum().clamp(min=1.0) * teacher.shape[-1])


def _allowed(
    n: int, t: int, attention_mask: torch.Tensor | None, causal: bool, device: torch.device
) -> torch.Tensor | None:
    """``(N, 1, T, T)`` bool: may query i look at key j (padding keys and the future hidden)."""
    allowed = None
    if attention_mask is not None:
        allowed = attention_mask.bool()[:, None, None, :].expand(n, 1, t, t)
    if causal:
        tri = torch.ones(t, t, dtype=torch.bool, device=device).tril()[None, None]
        allowed = tri.expand(n, 1, t, t) if allowed is None else allowed & tri
    return allowed


def attention_scores(
    queries: torch.Tensor,
    keys: torch.Tensor,
    heads: int,
    *,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Scaled dot products ``Q_r K_rᵀ / √d_r`` of ``heads`` relation heads, masked positions set
    to a large negative number.

    Args:
        queries: ``(N, T, D)`` outputs of a query projection (or values, for value relations).
        keys: ``(N, T, D)`` outputs of the key projection (the same tensor for self-relations).
        heads: relation heads ``R``; ``D`` must be divisible by it.
        attention_mask: ``(N, T)``; keys at padded positions are hidden.
        causal: hide keys after the query (decoders).

    Returns:
        ``(N, R, T, T)`` scores.
    """
    n, t, d = queries.shape
    if keys.shape != queries.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} differ")
    if heads < 1 or d % heads:
        raise ValueError(
            f"width {d} is not divisible into {heads} relation heads; pick relation_heads "
            f"dividing both models' query widths"
        )
    q = queries.reshape(n, t, heads, d // heads).transpose(1, 2)
    k = keys.reshape(n, t, heads, d // heads).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // heads)
    allowed = _allowed(n, t, attention_mask, causal, scores.device)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, _MASKED)
    return scores


def attention_relation(
    queries: torch.Tensor,
    keys: torch.Tensor,
    heads: int,
    *,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Log-probabilities ``log softmax(Q_r K_rᵀ / √d_r)`` over keys, ``(N, R, T, T)``.

    See :func:`attention_scores` for the arguments.

    Example:
        >>> q = torch.randn(2, 5, 8)
        >>> rel = attention_relation(q, q, 2, causal=True)
        >>> rel.shape, bool(torch.allclose(rel.exp().sum(-1), torch.ones(2, 2, 5)))
        (torch.Size([2, 2, 5, 5]), True)
    """
    return torch.log_softmax(
        attention_scores(queries, keys, heads, attention_mask=attention_mask, causal=causal), -1
    )


def _query_weights(
    rel: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor | None, float]:
    n, r, t, _ = rel.shape
    if attention_mask is None:
        return None, float(n * r * t)
    w = attention_mask.to(rel.dtype)[:, None, :]  # (N, 1, T): padded queries do not count
    return w, float(w.sum()) * r


def relation_kl_loss(
    student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``KL(teacher || student)`` between relation distributions, averaged over heads and queries.

    Args:
        student: ``(N, R, T, T)`` student log-probabilities (:func:`attention_relation`).
        teacher: the teacher's, same shape.
        attention_mask: ``(N, T)``; padded query rows are left out of the average.

    Example:
        >>> rel = attention_relation(torch.randn(1, 4, 6), torch.randn(1, 4, 6), 3)
        >>> relation_kl_loss(rel, rel).item()
        0.0
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"relation_kl_loss: student relations {tuple(student.shape)} and teacher relations "
            f"{tuple(teacher.shape)} differ; use the same relation_heads and sequence"
        )
    kl = (teacher.exp() * (teacher - student)).sum(-1)  # (N, R, T)
    w, count = _query_weights(teacher, attention_mask)
    total = kl.sum() if w is None else (kl * w).sum()
    return total / max(count, 1.0)


def attention_score_mse(
    student: torch.Tensor,
    teacher: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """TinyBERT's attention loss: MSE of attention scores over the positions attention uses.

    Args:
        student: ``(N, R, T, T)`` student scores (:func:`attention_scores`).
        teacher: the teacher's, same shape.
        attention_mask: ``(N, T)``; pairs with a padded query or key are left out.
        causal: leave out pairs with the key after the query.

    Example:
        >>> s = torch.zeros(1, 1, 2, 2)
        >>> attention_score_mse(s, torch.ones(1, 1, 2, 2), causal=True).item()  # 3 pairs
        1.0
    """
    if student.shape != teacher.shape:
        raise ValueError(
            f"attention_score_mse: student scores {tuple(student.shape)} and teacher scores "
            f"{tuple(teacher.shape)} differ; use the same relation_heads and sequence"
        )
    n, r, t, _ = teacher.shape
    allowed = _allowed(n, t, attention_mask, causal, teacher.device)
    sq = (student - teacher).pow(2)
    if allowed is None:
        return sq.mean()
    if attention_mask is not None:  # padded queries too
        allowed = allowed & attention_mask.bool()[:, None, :, None]
    w = allowed.to(sq.dtype).expand_as(sq)
    return (sq * w).sum() / w.sum().clamp(min=1.0)


def output_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: str = "kd",
    *,
    temperature: float = 1.0,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The prediction-layer term between the models' outputs.

    Args:
        student: ``(N, K)`` or ``(N, T, K)`` outputs.
        teacher: same shape.
        kind: ``"kd"`` (Hinton's soft targets at ``temperature``, per token for 3-D logits),
            ``"mse"``, or ``"cosine"`` (``1 - cos`` along the last dimension, for embeddings).
        temperature: KD temperature.
        attention_mask: ``(N, T)`` for 3-D outputs; padded tokens are left out.

    Example:
        >>> e = torch.randn(4, 8)
        >>> round(output_loss(e, 3 * e, "cosine").item(), 6)
        0.0
    """
    if kind not in OUTPUT_LOSSES or kind == "none":
        raise ValueError(f"output loss must be one of {OUTPUT_LOSSES[:-1]}, got {kind!r}")
    if student.shape != teacher.shape:
        raise ValueError(
            f"output_loss: student output {tuple(student.shape)} and teacher output "
            f"{tuple(teacher.shape)} differ; both models must predict the same thing"
        )
    keep = None
    if student.dim() == 3:
        if attention_mask is not None:
            keep = _token_weights(student, attention_mask).bool().reshape(-1)
        student, teacher = (
            student.reshape(-1, student.shape[-1]),
            teacher.reshape(-1, teacher.shape[-1]),
        )
        if keep is not None:
            student, teacher = student[keep], teacher[keep]
    if kind == "kd":
        return kd_loss(student, teacher, temperature=temperature)
    if kind == "mse":
        return F.mse_loss(student, teacher)
    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """TinyBERT's uniform mapping ``g(m) = m N / M``: student block ``i`` learns teacher block
    ``(i + 1) N / M - 1`` (0-based), so the last blocks always pair.

    Example:
        >>> uniform_layer_map(3, 6)
        {0: 1, 1: 3, 2: 5}
    """
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(
            f"uniform layer map needs 1 <= student layers ({student_layers}) <= teacher layers "
            f"({teacher_layers}); pass an explicit layer_map"
        )
    return {i: (i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)}


def last_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """MiniLM's pairing: the student's last block learns the teacher's last block.

    Example:
        >>> last_layer_map(3, 6)
        {2: 5}
    """
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError("both models need at least one block")
    return {student_layers - 1: teacher_layers - 1}
