"""Binary and ternary weights trained with a straight-through estimator (STE).

* BinaryConnect (Courbariaux et al. 2015): ``w_b = sign(w)``, deterministic, or stochastic with
  ``P(+1) = hard_sigmoid(w) = clip((w + 1) / 2, 0, 1)``; the real-valued latent weights are kept
  and clipped to ``[-1, 1]`` after each step (:func:`clip_latent_`, or the :class:`LatentClip`
  callback).
* XNOR-Net-style binary weights (Rastegari et al. 2016, BWN): ``w_b = alpha_c * sign(w)`` with
  ``alpha_c = mean |W_c|`` per output channel.
* TWN (Li, Zhang, Liu 2016): threshold ``delta = 0.7 * E|W|``, ``w_t = alpha * sign(w) *
  [|w| > delta]`` with ``alpha = mean |w|`` over ``|w| > delta`` (one scale per layer).
* TTQ (Zhu et al. 2017): learned scales ``W_p``, ``W_n`` (parameters) and threshold
  ``delta = t * max|W|``; ``w_t = W_p`` above ``delta``, ``-W_n`` below ``-delta``, else 0.

The layers subclass ``nn.Linear`` / ``nn.Conv2d`` and keep the latent weights in ``weight``; the
forward uses the quantized weights, the backward passes the gradient straight through to the
latent weights (TTQ scales it by ``W_p`` / ``W_n`` / 1 as in the paper, eq. 8). Stochastic layers
sample only in training mode; in eval mode they use ``sign(w)``, so the deployed model is binary
(re-estimate batch-norm statistics for it with :func:`recalibrate_batchnorm_`).
The pure functions live in :mod:`.ops`, the configs and handlers in :mod:`.config`.
:func:`pack_low_bit` stores the weights in 1 or 2 bits each; :func:`strip_low_bit` turns the layers
into plain ones holding the quantized values (e.g. for ONNX export).

Example:
    >>> import nnshrink as ns
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> _ = ns.compress_(model, ns.Ternary(mode="twn", exclude=()))
    >>> sorted(pack_low_bit(model))
    ['0', '2']
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core import set_submodule
from ..core.finalize import register_finalizer
from ..io import layer_kwargs, register_module
from ..storage.packbits import PackedTensor, pack_binary, pack_ternary
from ..train.callbacks import Callback
from .ops import (
    BinaryMode,
    TernaryMode,
    binarize,
    sign_pm1,
    ste,
    ternarize_ttq,
    ternarize_twn,
    twn_threshold,
    xnor_scales,
)

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "LatentClip",
    "TernaryConv2d",
    "TernaryLinear",
    "binarize",
    "clip_latent_",
    "pack_low_bit",
    "recalibrate_batchnorm_",
    "sign_pm1",
    "ste",
    "strip_low_bit",
    "ternarize_ttq",
    "ternarize_twn",
    "twn_threshold",
    "xnor_scales",
]


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class _BinaryMixin:
    """Quantized weight for BinaryLinear / BinaryConv2d."""

    mode: str
    weight: nn.Parameter
    training: bool

    def _setup(self, mode: str) -> None:
        if mode not in ("deterministic", "stochastic", "xnor"):
            raise ValueError(f"unknown binary mode {mode!r}; use deterministic, stochastic or xnor")
        self.mode = mode

    def quantized_weight(self) -> torch.Tensor:
        """The binary weight used in forward, with a straight-through gradient to ``weight``."""
        mode = self.mode
        if mode == "stochastic" and not self.training:
            mode = "deterministic"
        return ste(self.weight, binarize(self.weight.detach(), mode))

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        return _layer_macs(self, output)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"  # type: ignore[misc]


class _TernaryMixin:
    """Quantized weight for TernaryLinear / TernaryConv2d."""

    mode: str
    threshold: float
    weight: nn.Parameter

    def _setup(self, mode: str, threshold: float | None) -> None:
        if mode not in ("twn", "ttq"):
            raise ValueError(f"unknown ternary mode {mode!r}; use 'twn' or 'ttq'")
        self.mode = mode
        self.threshold = float(threshold if threshold is not None else _DEFAULT_THRESHOLD[mode])
        if mode == "ttq":
            self.wp = nn.Parameter(torch.ones(()))
            self.wn = nn.Parameter(torch.ones(()))
            self.init_scales()

    @torch.no_grad()
    def init_scales(self) -> None:
        """TTQ: set ``wp``/``wn`` to the mean magnitude of the latent weights above/below the
        threshold, so a converted pretrained layer starts close to its full-precision output."""
        if self.mode != "ttq":
            return
        w = self.weight.detach()
        delta = self.threshold * w.abs().max()
        for scale, part in ((self.wp, w[w > delta]), (self.wn, -w[w < -delta])):
            scale.fill_(float(part.mean()) if part.numel() else 1.0)

    def quantized_weight(self) -> torch.Tensor:
        """The ternary weight used in forward; gradients reach ``weight`` (and ``wp``/``wn``)."""
        w = self.weight
        if self.mode == "twn":
            return ste(w, ternarize_twn(w.detach(), self.threshold))
        delta = self.threshold * w.detach().abs().max()
        pos = (w.detach() > delta).to(w.dtype)
        neg = (w.detach() < -delta).to(w.dtype)
        scale = (self.wp * pos + self.wn * neg + (1 - pos - neg)).detach()
        latent = w * scale
        return ternarize_ttq(w, self.wp, self.wn, self.threshold) + (latent - latent.detach())

    def macs(self, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
        return _layer_macs(self, output)  # type: ignore[arg-type]

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        return f"{base}, mode={self.mode!r}, threshold={self.threshold}"


_DEFAULT_THRESHOLD = {"twn": 0.7, "ttq": 0.05}


def _layer_macs(m: nn.Module, output: torch.Tensor) -> int:
    """MACs of the dense layer the low-bit layer computes (same as its float counterpart)."""
    if isinstance(m, nn.Linear):
        return output.numel() * m.in_features
    return output.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]


class BinaryLinear(_BinaryMixin, nn.Linear):
    """``nn.Linear`` with binary weights (BinaryConnect or XNOR-style), latent weights kept.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        mode: ``"deterministic"``, ``"stochastic"`` or ``"xnor"``.

    Example:
        >>> layer = BinaryLinear(4, 2, mode="xnor")
        >>> layer(torch.zeros(1, 4)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        mode: BinaryMode = "deterministic",
    ):
        super().__init__(in_features, out_features, bias)
        self._setup(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class BinaryConv2d(_BinaryMixin, nn.Conv2d):
    """``nn.Conv2d`` with binary weights (BinaryConnect or XNOR-style), latent weights kept.

    Args:
        in_channels, ..., bias, padding_mode: as ``nn.Conv2d``.
        mode: ``"deterministic"``, ``"stochastic"`` or ``"xnor"``.

    Example:
        >>> BinaryConv2d(1, 4, 3, mode="xnor")(torch.zeros(1, 1, 5, 5)).shape
        torch.Size([1, 4, 3, 3])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        mode: BinaryMode = "deterministic",
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
        )
        self._setup(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class TernaryLinear(_TernaryMixin, nn.Linear):
    """``nn.Linear`` with ternary weights (TWN or TTQ), latent weights kept.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        mode: ``"twn"`` or ``"ttq"``.
        threshold: TWN factor on ``mean|W|`` (default 0.7) or TTQ fraction of ``max|W|``
            (default 0.05).

    Example:
        >>> TernaryLinear(4, 2, mode="ttq")(torch.zeros(1, 4)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        mode: TernaryMode = "twn",
        threshold: float | None = None,
    ):
        super().__init__(in_features, out_features, bias)
        self._setup(mode, threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


class TernaryConv2d(_TernaryMixin, nn.Conv2d):
    """``nn.Conv2d`` with ternary weights (TWN or TTQ), latent weights kept.

    Args:
        in_channels, ..., bias, padding_mode: as ``nn.Conv2d``.
        mode, threshold: as :class:`TernaryLinear`.

    Example:
        >>> TernaryConv2d(1, 4, 3)(torch.zeros(1, 1, 5, 5)).shape
        torch.Size([1, 4, 3, 3])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        mode: TernaryMode = "twn",
        threshold: float | None = None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
        )
        self._setup(mode, threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


_LOW_BIT = (BinaryLinear, BinaryConv2d, TernaryLinear, TernaryConv2d)


def _init_kwargs(m: nn.Module) -> dict[str, Any]:
    kwargs = layer_kwargs(m)
    kwargs["mode"] = m.mode
    if isinstance(m, TernaryLinear | TernaryConv2d):
        kwargs["threshold"] = m.threshold
    return kwargs


@torch.no_grad()
def _convert(module: nn.Module, cls: type[nn.Module], **options: Any) -> nn.Module:
    new = cls(**layer_kwargs(module), **options)
    new.to(device=module.weight.device, dtype=module.weight.dtype)
    new.weight.copy_(module.weight)
    if module.bias is not None:
        new.bias.copy_(module.bias)
    if hasattr(new, "init_scales"):
        new.init_scales()
    return new


def clip_latent_(model: nn.Module, bound: float = 1.0) -> None:
    """Clip BinaryConnect latent weights to ``[-bound, bound]`` (call after ``optimizer.step``).

    Only deterministic/stochastic binary layers are clipped (the BinaryConnect rule: latent
    weights beyond +-1 would never change sign again and stop learning).
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BinaryLinear | BinaryConv2d) and m.mode != "xnor":
                m.weight.clamp_(-bound, bound)


class LatentClip(Callback):
    """Training callback applying :func:`clip_latent_` after every optimizer step.

    Example:
        >>> ns.train.fit(model, loader, epochs=1, callbacks=[LatentClip()])  # doctest: +SKIP
    """

    def __init__(self, bound: float = 1.0) -> None:
        self.bound = bound

    def on_train_begin(self, model: nn.Module, optimizer: Any) -> None:
        clip_latent_(model, self.bound)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        clip_latent_(model, self.bound)


@torch.no_grad()
def recalibrate_batchnorm_(
    model: nn.Module, batches: Iterable[Any], max_batches: int | None = None
) -> None:
    """Re-estimate batch-norm running statistics with the deployed (eval-mode) weights.

    Stochastic BinaryConnect layers sample their weights in training mode, so the running
    statistics that batch norm gathered during training describe the sampled networks, not the
    deterministic ``sign(w)`` network used at test time. Call this after training: it runs
    ``batches`` (inputs, or ``(inputs, targets)`` pairs) through the model with every low-bit layer
    in eval mode and every batch-norm layer averaging exact (cumulative) statistics.

    Args:
        model: the trained model (left in eval mode).
        batches: an iterable of input tensors or ``(x, y)`` tuples (e.g. the training loader).
        max_batches: stop after this many batches.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: exact mean over the batches seen
        m.train()
    try:
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            model(batch[0] if isinstance(batch, tuple | list) else batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()


def strip_low_bit(model: nn.Module) -> nn.Module:
    """Replace binary/ternary layers by plain ``nn.Linear``/``nn.Conv2d`` holding the quantized
    weights (eval-mode values; stochastic layers use ``sign``). In place; returns ``model``."""

    def plain(m: nn.Module) -> nn.Module:
        base = nn.Linear if isinstance(m, nn.Linear) else nn.Conv2d
        new = base(**layer_kwargs(m)).to(device=m.weight.device, dtype=m.weight.dtype)
        was = m.training
        m.eval()
        with torch.no_grad():
            new.weight.copy_(m.quantized_weight())
            if m.bias is not None:
                new.bias.copy_(m.bias)
        m.train(was)
        return new

    if isinstance(model, _LOW_BIT):
        return plain(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, _LOW_BIT):
            set_submodule(model, name, plain(m))
    return model


@torch.no_grad()
def pack_low_bit(model: nn.Module) -> dict[str, PackedTensor]:
    """Bit-packed weights of every binary (1 bit), XNOR (1 bit) and ternary (2 bits) layer.

    Keyed by module name. Sizes: ``sum(p.nbytes for p in pack_low_bit(model).values())``;
    restore a weight exactly with :func:`~nnshrink.storage.packbits.unpack_binary` /
    ``unpack_ternary``. XNOR layers count their weights only (their activations are binarized
    at run time; the input batch norm stays float).
    """
    from .xnor_layers import PackedXNORConv2d, PackedXNORLinear, XNORConv2d, XNORLinear

    out: dict[str, PackedTensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, _LOW_BIT + (XNORConv2d, XNORLinear)):
            was = m.training
            m.eval()
            w = m.quantized_weight().detach()
            m.train(was)
            is_ternary = isinstance(m, TernaryLinear | TernaryConv2d)
            out[name] = pack_ternary(w) if is_ternary else pack_binary(w)
        elif isinstance(m, PackedXNORConv2d | PackedXNORLinear):
            out[name] = pack_binary(m.dequantized_weight())
    return out


for _cls in _LOW_BIT:
    register_module(_cls, _init_kwargs)


def _finalize_low_bit(model: nn.Module) -> list[str]:
    names = [name for name, m in model.named_modules() if isinstance(m, _LOW_BIT)]
    strip_low_bit(model)
    return names


register_finalizer("low-bit", _finalize_low_bit)
