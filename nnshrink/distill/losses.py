"""Knowledge-distillation losses as pure functions (tensors in, scalar tensor out).

* :func:`kd_loss`: Hinton, Vinyals & Dean 2015, soft targets at temperature T.
* :func:`hint_loss`: FitNets (Romero et al. 2015), MSE between a regressed student feature and a
  teacher feature.
* :func:`attention_map` / :func:`at_loss`: attention transfer (Zagoruyko & Komodakis 2017).
* :func:`sp_loss`: similarity-preserving KD (Tung & Mori 2019).
* :func:`rkd_distance_loss`: relational KD, distance term (Park et al. 2019).

Each loss takes student first, teacher second. Teacher tensors should come from a frozen teacher
under ``torch.no_grad()`` (:class:`nnshrink.distill.Distiller` does that).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor | None = None,
    *,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> torch.Tensor:
    """Hinton KD: ``alpha * T² * KL(p_T(teacher) || p_T(student)) + (1 - alpha) * CE(student, y)``.

    The KL term is averaged over the batch (``batchmean``) and scaled by T² so that its gradients
    keep the same magnitude as T changes (Hinton et al. 2015, section 2).

    Args:
        student_logits: ``(N, K)`` raw scores of the student.
        teacher_logits: ``(N, K)`` raw scores of the teacher.
        targets: ``(N,)`` class labels; ``None`` gives the soft term alone (``alpha`` ignored).
        temperature: softmax temperature T (Hinton et al. use up to 20 on MNIST).
        alpha: weight of the soft term; ``1 - alpha`` weights the hard cross-entropy.

    Example:
        >>> s, t = torch.randn(8, 10), torch.randn(8, 10)
        >>> kd_loss(s, s, temperature=4.0).item()
        0.0
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; both models must predict the same classes"
        )
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    if targets is None:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, targets)


def hint_loss(
    student_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    regressor: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """FitNets hint loss: ``mean((regressor(student_feature) - teacher_feature)²)``.

    Args:
        student_feature: the guided layer's output.
        teacher_feature: the hint layer's output.
        regressor: maps the student feature to the teacher's shape (FitNets' convolutional
            regressor; a 1x1 conv or linear layer); ``None`` when the shapes already match.

    Example:
        >>> hint_loss(torch.ones(2, 4), torch.zeros(2, 4)).item()
        1.0
    """
    s = student_feature if regressor is None else regressor(student_feature)
    if s.shape != teacher_feature.shape:
        raise ValueError(
            f"hint_loss: student feature {tuple(s.shape)} (after the regressor) and teacher "
            f"feature {tuple(teacher_feature.shape)} differ; give a regressor that maps one to "
            f"the other, or pick layers with the same spatial size"
        )
    return F.mse_loss(s, teacher_feature)


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a feature map: ``normalize(mean_c |A_c|^p)``, flattened per sample.

    Zagoruyko & Komodakis 2017, F_sum^p with the L2 normalization of their eq. 2 (mean and sum over
    channels differ by a constant that the normalization removes).

    Args:
        feature: ``(N, C, H, W)`` activations.
        p: exponent (the paper uses 2).

    Returns:
        ``(N, H*W)`` unit-norm rows.
    """
    if feature.dim() != 4:
        raise ValueError(f"attention_map expects (N, C, H, W), got shape {tuple(feature.shape)}")
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(
    student_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    *,
    p: float = 2.0,
    beta: float = 1000.0,
) -> torch.Tensor:
    """Attention-transfer loss for one layer pair: ``beta/2 * mean((Q_s - Q_t)²)``.

    ``Q`` is :func:`attention_map`. The mean over batch and positions with ``beta = 1000`` follows
    the authors' code (github.com/szagoruyko/attention-transfer), which the paper's
    ``beta/2 * ||Q_s - Q_t||_p`` with beta = 1000 refers to. Channel counts may differ; spatial
    sizes must match.

    Example:
        >>> f = torch.randn(2, 8, 4, 4)
        >>> at_loss(f, 3 * f).item()  # attention is scale-invariant
        0.0
    """
    if student_feature.shape[-2:] != teacher_feature.shape[-2:]:
        raise ValueError(
            f"at_loss: spatial sizes differ (student {tuple(student_feature.shape[-2:])}, teacher "
            f"{tuple(teacher_feature.shape[-2:])}); pair layers at the same resolution"
        )
    qs, qt = attention_map(student_feature, p), attention_map(teacher_feature, p)
    return beta / 2 * (qs - qt).pow(2).mean()


def similarity_matrix(feature: torch.Tensor) -> torch.Tensor:
    """Row-normalized batch similarity ``normalize(Q Q^T)`` with ``Q`` the flattened features."""
    q = feature.flatten(1)
    return F.normalize(q @ q.t(), dim=1)


def sp_loss(
    student_feature: torch.Tensor, teacher_feature: torch.Tensor, *, gamma: float = 3000.0
) -> torch.Tensor:
    """Similarity-preserving loss (Tung & Mori 2019, eq. 4): ``gamma / b² * ||G_s - G_t||_F²``.

    ``G`` is :func:`similarity_matrix` over the batch of ``b`` samples, so the two features may
    have any shapes with the same batch size. The paper uses ``gamma = 3000`` on CIFAR-10.

    Example:
        >>> f = torch.randn(4, 8, 3, 3)
        >>> sp_loss(f, 2 * f).item()
        0.0
    """
    b = student_feature.shape[0]
    if teacher_feature.shape[0] != b:
        raise ValueError("sp_loss: student and teacher features need the same batch size")
    diff = similarity_matrix(student_feature) - similarity_matrix(teacher_feature)
    return gamma * diff.pow(2).sum() / (b * b)


def _pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * x @ x.t()).clamp_min(1e-12)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(x), device=x.device, dtype=x.dtype))


def rkd_distance_loss(
    student_feature: torch.Tensor, teacher_feature: torch.Tensor, *, weight: float = 25.0
) -> torch.Tensor:
    """RKD distance loss (Park et al. 2019): Huber loss between mean-normalized pairwise distances.

    Args:
        student_feature, teacher_feature: ``(N, ...)`` embeddings (flattened per sample).
        weight: the paper's lambda_D (25).

    Example:
        >>> e = torch.randn(6, 5)
        >>> rkd_distance_loss(e, 2 * e).item() < 1e-6  # distances are mean-normalized
        True
    """
    if len(student_feature) < 2:
        raise ValueError("rkd_distance_loss needs a batch of at least 2 samples")
    ds, dt = _pairwise_distances(student_feature), _pairwise_distances(teacher_feature)
    off_diag = ~torch.eye(len(ds), dtype=torch.bool, device=ds.device)
    ds = ds / ds[off_diag].mean()
    dt = dt / dt[off_diag].mean()
    return weight * F.smooth_l1_loss(ds[off_diag], dt[off_diag])
