"""Conv2d checks and geometry shared by the CP and Tucker-2 decompositions."""

from __future__ import annotations

from torch import nn


def unsupported_conv_reason(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot be CP/Tucker-decomposed, or ``None`` when it can."""
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not nn.Conv2d (CP/Tucker decompose plain Conv2d only)"
    if conv.groups != 1:
        kind = "depthwise" if conv.groups == conv.in_channels else "grouped"
        return (
            f"{kind} conv (groups={conv.groups}) is left alone: its kernel has no input-channel "
            "mode to factor"
        )
    return None


def check_conv(conv: nn.Module, name: str = "conv") -> nn.Conv2d:
    """Return ``conv`` or raise ``ValueError`` naming the module and what is supported."""
    reason = unsupported_conv_reason(conv)
    if reason is not None:
        raise ValueError(f"{name}: {reason}; supported: nn.Conv2d with groups=1")
    return conv


def new_conv(reference: nn.Conv2d, in_ch: int, out_ch: int, kernel, **kwargs) -> nn.Conv2d:
    """A Conv2d on ``reference``'s device and dtype (bias off unless asked)."""
    kwargs.setdefault("bias", False)
    weight = reference.weight
    return nn.Conv2d(in_ch, out_ch, kernel, device=weight.device, dtype=weight.dtype, **kwargs)
