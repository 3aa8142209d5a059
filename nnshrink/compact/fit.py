"""Fit a transferred filter bank to a trained conv's filters (pure: tensors in, tensors out).

So that distillation starts near the original instead of from noise, a CReLU or rotation block
put in place of a trained conv is initialised from that conv's filters:

* **CReLU** (:func:`fit_crelu`): Shang et al. 2016 observed that the filters of trained CNNs,
  in the lower layers especially, come in near-opposite pairs ``w_b ≈ -w_a``. We pair the
  filters greedily by most negative cosine (:func:`pair_filters`) and give each pair one learned
  filter ``v`` with ``v ≈ w_a`` and ``-v ≈ w_b``: the least-squares ``v = (w_a - w_b) / 2``.
  Taking the first half of the filters instead would leave the other half's outputs to
  whatever their negations are; pairing keeps every output channel as close as the trained
  filters allow (and exact when they are exact pairs).
* **rotation** (:func:`fit_rotation`): filters are grouped in fours by greedy best match of
  each filter's 90/180/270° rotations (:func:`group_rotations`), and the learned filter is the
  average of the group's members rotated back: the least-squares fit of
  ``rot^r(v) ≈ w_{c_r}`` for the four members.

When a BatchNorm follows the conv, a channel's scale does not matter (the BN renormalises it),
so ``scale_free=True`` fits directions (unit-norm filters, rescaled by the group's mean norm)
and reports per channel the ``gain`` ``α`` with ``new filter ≈ α · old filter``; the caller
scales that channel's BN running statistics by ``α`` so the BN output is unchanged. Every fit
reports ``cosine``: per original channel, the cosine between its filter and the one the block
will apply in its place (1.0 = reproduced exactly, up to scale).

Example:
    >>> w = torch.randn(2, 3, 3, 3)
    >>> fit = fit_crelu(torch.cat([w, -w]))  # exact pairs: reproduced exactly
    >>> bool(fit.cosine.min() > 0.999)
    True
"""

from __future__ import annotations

import dataclasses

import torch

from .transferred import rot90_filters


@dataclasses.dataclass
class TransferFit:
    """A fitted bank: what to load into the block and how its channels map to the original.

    Attributes:
        weight: the learned filters (``C/2`` for CReLU, ``C/4`` for rotation).
        bias: their biases, or ``None``.
        order: ``order[k]`` is the original channel that block channel ``k`` stands in for
            (CReLU: ``k < C/2`` is ``+v_k``, ``k >= C/2`` is ``-v_{k-C/2}``; rotation: ``k =
            o * 4 + r`` is filter ``o`` rotated ``r`` times).
        gain: per original channel, ``α`` with applied filter ≈ ``α`` x original filter.
        cosine: per original channel, cosine between original and applied filter.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    order: torch.Tensor
    gain: torch.Tensor
    cosine: torch.Tensor


def _unit(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    norms = rows.norm(dim=1)
    return rows / norms.clamp_min(1e-12).unsqueeze(1), norms


def pair_filters(weight: torch.Tensor) -> list[tuple[int, int]]:
    """Pair the output filters of ``weight`` greedily by most negative cosine similarity.

    Args:
        weight: ``(C, ...)`` filters, ``C`` even.

    Returns:
        ``C/2`` pairs ``(a, b)`` with ``a < b``, in the order they were formed (best first).

    Example:
        >>> w = torch.randn(2, 4)
        >>> sorted(pair_filters(torch.stack([w[0], w[1], -w[0], -w[1]])))
        [(0, 2), (1, 3)]
    """
    c = weight.shape[0]
    if c % 2:
        raise ValueError(f"pairing needs an even number of filters, got {c}")
    unit, _ = _unit(weight.reshape(c, -1).double())
    score = -(unit @ unit.T)
    score.fill_diagonal_(-float("inf"))
    pairs = []
    for _ in range(c // 2):
        flat = int(torch.argmax(score))
        a, b = sorted(divmod(flat, c))
        pairs.append((a, b))
        score[[a, b], :] = -float("inf")
        score[:, [a, b]] = -float("inf")
    return pairs


def group_rotations(weight: torch.Tensor) -> list[list[int]]:
    """Group square filters in fours, member ``r`` best matching the anchor rotated ``r`` x 90°.

    Anchors are taken by decreasing norm (the strongest filters define the bank; ties go to
    the lower index); each picks, for ``r = 1, 2, 3``, the free filter most similar (cosine) to
    its rotation by ``r``.

    Args:
        weight: ``(C, C_in, k, k)``, ``C`` divisible by 4.

    Returns:
        ``C/4`` groups ``[c_0, c_1, c_2, c_3]`` (``c_0`` the anchor).

    Example:
        >>> w = torch.randn(1, 2, 3, 3)
        >>> group_rotations(torch.cat([2 * w] + [rot90_filters(w, r) for r in (3, 1, 2)]))
        [[0, 2, 3, 1]]
    """
    c = weight.shape[0]
    if c % 4:
        raise ValueError(f"rotation groups need a multiple of 4 filters, got {c}")
    w = weight.double()
    unit, norms = _unit(w.reshape(c, -1))
    # similarity[r][a, b] = cos(rot^r(w_a), w_b)
    similarity = [_unit(rot90_filters(w, r).reshape(c, -1))[0] @ unit.T for r in range(4)]
    free = torch.ones(c, dtype=torch.bool)
    groups = []
    for anchor in torch.argsort(-norms, stable=True).tolist():
        if not free[anchor]:
            continue
        free[anchor] = False
        group = [anchor]
        for r in (1, 2, 3):
            scores = similarity[r][anchor].masked_fill(~free, -float("inf"))
            pick = int(torch.argmax(scores))
            free[pick] = False
            group.append(pick)
        groups.append(group)
    return groups


def _gain_and_cosine(
    original: torch.Tensor, applied: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    o, a = original.reshape(len(original), -1), applied.reshape(len(applied), -1)
    dot = (o * a).sum(1)
    on, an = o.norm(dim=1), a.norm(dim=1)
    cosine = dot / (on * an).clamp_min(1e-12)
    # least-squares α of applied ≈ α original; a channel fitted the wrong way round (α <= 0)
    # keeps the norm ratio so its BN statistics stay positive
    gain = torch.where(dot > 0, dot / (on * on).clamp_min(1e-12), an / on.clamp_min(1e-12))
    return gain, cosine


def _fit(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    groups: list[list[int]],
    aligners: list,
    signs: list[float],
    expand,
    scale_free: bool,
) -> TransferFit:
    w = weight.detach().double()
    c = w.shape[0]
    _, norms = _unit(w.reshape(c, -1))
    learned = []
    for group in groups:
        members = [align(w[i]) for align, i in zip(aligners, group)]
        if scale_free:
            scale = norms[group].mean()
            members = [m / norms[i].clamp_min(1e-12) * scale for m, i in zip(members, group)]
        learned.append(torch.stack(members).mean(0))
    learned_w = torch.stack(learned)
    order = torch.tensor([i for g in _layout(groups) for i in g], dtype=torch.long)
    applied = torch.empty_like(w)
    applied[order] = expand(learned_w)
    gain, cosine = _gain_and_cosine(w, applied)
    new_bias = None
    if bias is not None:
        b = bias.detach().double()
        # least squares of the member biases (signed for CReLU); a BN after the conv absorbs
        # the bias instead (the caller folds it into the running mean), so it starts at zero
        new_bias = torch.stack([
            sum(s * b[i] for s, i in zip(signs, g)) / len(g) for g in groups
        ])  # fmt: skip
        if scale_free:
            new_bias = torch.zeros_like(new_bias)
    dtype = weight.dtype
    return TransferFit(
        learned_w.to(dtype),
        None if new_bias is None else new_bias.to(dtype),
        order,
        gain.to(dtype),
        cosine.to(dtype),
    )


def _layout(groups: list[list[int]]) -> list[list[int]]:
    # CReLU groups are pairs laid out [all a's, all b's]; rotation groups are laid out o*4 + r
    if len(groups[0]) == 2:
        return [[g[0] for g in groups], [g[1] for g in groups]]
    return groups


def fit_crelu(
    weight: torch.Tensor, bias: torch.Tensor | None = None, *, scale_free: bool = False
) -> TransferFit:
    """Fit ``C/2`` CReLU filters to a conv's ``C`` filters (pairs by most negative cosine).

    Args:
        weight: the conv's ``(C, C_in/groups, kh, kw)`` weight.
        bias: its bias or ``None``.
        scale_free: fit directions only (a BatchNorm follows; see the module docstring).

    Example:
        >>> fit = fit_crelu(torch.randn(8, 4, 3, 3))
        >>> fit.weight.shape, sorted(fit.order.tolist()) == list(range(8))
        (torch.Size([4, 4, 3, 3]), True)
    """
    groups = [list(p) for p in pair_filters(weight)]

    def expand(v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v, -v])

    return _fit(weight, bias, groups, [lambda t: t, lambda t: -t], [1.0, -1.0], expand, scale_free)


def fit_rotation(
    weight: torch.Tensor, bias: torch.Tensor | None = None, *, scale_free: bool = False
) -> TransferFit:
    """Fit ``C/4`` filters, each used at 4 rotations, to a conv's ``C`` square filters.

    Args:
        weight: the conv's ``(C, C_in, k, k)`` weight.
        bias: its bias or ``None`` (the four rotations of a filter share one bias).
        scale_free: fit directions only (a BatchNorm follows).

    Example:
        >>> v = torch.randn(1, 2, 3, 3)
        >>> fit = fit_rotation(torch.cat([rot90_filters(v, r) for r in range(4)]))
        >>> any(torch.allclose(fit.weight, rot90_filters(v, r)) for r in range(4))
        True
        >>> bool(fit.cosine.min() > 0.999)
        True
    """
    groups = group_rotations(weight)

    def expand(v: torch.Tensor) -> torch.Tensor:
        bank = torch.stack([rot90_filters(v, r) for r in range(4)], dim=1)
        return bank.reshape(-1, *v.shape[1:])

    aligners = [lambda t, r=r: rot90_filters(t, -r) for r in range(4)]
    return _fit(weight, bias, groups, aligners, [1.0] * 4, expand, scale_free)
