"""Plan one transferred block (CReLU or rotation) in place of a trained conv, with its bookkeeping.

:class:`~nnshrink.compact.CompactReplace` calls :func:`transfer_skip_reason` and
:func:`plan_transfer` for each conv selected for ``block="crelu"`` or ``"rotation"``; the plan
holds everything the edit needs, computed before the model is touched:

* the block, fitted to the conv's filters (:mod:`.fit`) or freshly initialised;
* for a BatchNorm that reads the conv: its new running statistics (each channel's scale change
  ``α`` and the conv bias folded in, so that in eval mode the BN sees what it saw before up to
  the fit error), permuted like the channels when the block's order moves downstream;
* for CReLU, where the block's channel order goes: the concatenation ``[v, -v]`` produces the
  original channels in a new order; when only plain convs read the ReLU's output (through
  pooling), the BN channels and those convs' input channels are permuted to match (free at run
  time); otherwise the block keeps a ``channel_order`` buffer (one gather per call). A rotation
  block reorders its filter bank instead, which costs nothing, so its BN is never permuted.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .fit import TransferFit, fit_crelu, fit_rotation
from .graph import ConvUse
from .transferred import CReLUConv2d, RotationConv2d


@dataclasses.dataclass
class TransferPlan:
    """The edit for one conv: the block, the BN's new state, permutations for its readers.

    Attributes:
        block: the module to put where the conv was.
        batchnorm: the name of the BN whose state changes, or ``None``.
        bn_state: ``{buffer or parameter name: new tensor}`` for that BN.
        reader_order: ``{conv name: index}``: the reader's weight becomes
            ``weight.index_select(1, index)``.
        fit_cosine: mean cosine between the original filters and the ones the block applies in
            their place (``None`` for a random start).
        notes: what was done with the channel order, for the report.
    """

    block: nn.Module
    batchnorm: str | None = None
    bn_state: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    reader_order: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    fit_cosine: float | None = None
    notes: str = ""


def transfer_skip_reason(block: str, conv: nn.Conv2d, use: ConvUse | None) -> str | None:
    """Why ``conv`` cannot take the transferred ``block`` (``None``: it can)."""
    if block == "crelu":
        if conv.out_channels % 2:
            return f"odd out_channels={conv.out_channels} (crelu needs pairs)"
        if use is None or use.calls != 1:
            return "called more than once (crelu needs one ReLU after one call)"
        if not use.relu:
            return (
                "not followed by a ReLU (directly or through one BatchNorm) that alone reads "
                "its output"
            )
        return None
    kh, kw = conv.kernel_size
    if kh != kw or conv.dilation[0] != conv.dilation[1]:
        return f"kernel {conv.kernel_size} / dilation {conv.dilation} not square (rotation)"
    if conv.out_channels % 4:
        return f"out_channels={conv.out_channels} not divisible by 4 (rotation)"
    return None


def plan_transfer(
    block: str,
    conv: nn.Conv2d,
    use: ConvUse | None,
    batchnorm: nn.Module | None,
    *,
    init: str,
    weight: torch.Tensor | None = None,
) -> TransferPlan:
    """Build and fit the transferred block for ``conv``; work out the BN and reader edits.

    Args:
        block: ``"crelu"`` or ``"rotation"``.
        conv: the conv to replace (checked with :func:`transfer_skip_reason` first).
        use: its :class:`~nnshrink.compact.graph.ConvUse` (``None`` when not traced).
        batchnorm: the BN module named by ``use.batchnorm``, if any.
        init: ``"original"`` (fit the block to the conv) or ``"random"``.
        weight: the conv's weight as the fit should see it (its input channels already permuted
            by an earlier plan); ``conv.weight`` when ``None``.

    Example:
        >>> conv = nn.Conv2d(4, 8, 3, padding=1)
        >>> plan = plan_transfer("rotation", conv, None, None, init="original")
        >>> type(plan.block).__name__, plan.block(torch.zeros(1, 4, 5, 5)).shape
        ('RotationConv2d', torch.Size([1, 8, 5, 5]))
    """
    weight = conv.weight if weight is None else weight
    device, dtype = conv.weight.device, conv.weight.dtype
    if init == "random":
        new = (CReLUConv2d if block == "crelu" else RotationConv2d).from_conv(conv)
        return TransferPlan(new.to(device, dtype), notes="random start")
    stats = batchnorm is not None and batchnorm.running_mean is not None
    scale_free = batchnorm is not None  # a BN renormalises each channel: fit directions
    bias = None if conv.bias is None else conv.bias.detach()
    fitter = fit_crelu if block == "crelu" else fit_rotation
    fit = fitter(weight.detach(), bias, scale_free=scale_free)
    order = fit.order.to(device)
    position = torch.empty_like(order)
    position[order] = torch.arange(len(order), device=device)
    plan = TransferPlan(block=None, fit_cosine=float(fit.cosine.mean()))  # type: ignore[arg-type]

    moved = block == "crelu" and use is not None and use.readers is not None
    if block == "crelu":
        new = CReLUConv2d.from_conv(conv, ordered=not moved)
        if not moved:
            new.channel_order.copy_(position)
            plan.notes = "channel order kept in the block (its readers are not plain convs)"
        else:
            plan.reader_order = {name: order for name in use.readers}
            plan.notes = "channel order moved into " + (
                ", ".join(use.readers) if use.readers else "nothing (output unread)"
            )
            if batchnorm is not None:
                plan.notes += " and the BatchNorm"
    else:
        new = RotationConv2d.from_conv(conv)
        new.channel_order.copy_(position)
        plan.notes = "channel order kept in the filter bank"
    new = new.to(device, dtype)
    with torch.no_grad():
        new.weight.copy_(fit.weight)
        if new.bias is not None and fit.bias is not None:
            new.bias.copy_(fit.bias)
    plan.block = new
    if batchnorm is not None:
        plan.batchnorm = use.batchnorm if use is not None else None
        plan.bn_state = _batchnorm_state(batchnorm, fit, bias, stats, order if moved else None)
    return plan


def _batchnorm_state(
    bn: nn.Module,
    fit: TransferFit,
    conv_bias: torch.Tensor | None,
    stats: bool,
    order: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    """New BN tensors: statistics scaled by each channel's gain, then permuted by ``order``.

    For a channel whose new pre-BN output is ``α (z - b)`` (``z`` the old output, ``b`` the old
    conv bias, now zero), ``mean' = α (mean - b)`` and ``var' = α² (var + eps) - eps`` give
    exactly the old normalised value: ``(α (z - b) - mean') / sqrt(var' + eps)``.
    """
    out: dict[str, torch.Tensor] = {}
    if stats:
        gain = fit.gain.to(bn.running_mean.device, bn.running_mean.dtype)
        mean = bn.running_mean.detach()
        if conv_bias is not None:
            mean = mean - conv_bias.to(mean.dtype)
        out["running_mean"] = gain * mean
        var = gain.square() * (bn.running_var.detach() + bn.eps) - bn.eps
        out["running_var"] = var.clamp_min(0)
    if order is not None:
        for key in ("weight", "bias", "running_mean", "running_var"):
            tensor = out.get(key, getattr(bn, key, None))
            if tensor is not None:
                out[key] = tensor.detach().index_select(0, order.to(tensor.device))
    return out
