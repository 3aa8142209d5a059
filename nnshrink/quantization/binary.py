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
:func:`pack_low_bit` stores the weights in 1 or 2 bits each; :func:`strip_low_bit` turns the layers
into plain ones holding the quantized values (e.g. for ONNX export).

Example:
    >>> import nnshrink as ns
    >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> _ = ns.compress_(model, Ternary(mode="twn", keep_first=False, keep_last=False))
    >>> sorted(pack_low_bit(model))
    ['0', '2']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Config, ConfigError, named_layers, register_handler, set_submodule
from ..io import register_module
from ..train.callbacks import Callback
from .packbits import PackedTensor, pack_binary, pack_ternary

__all__ = [
    "BinaryConv2d",
    "BinaryLinear",
    "BinaryWeights",
    "LatentClip",
    "LowBitRow",
    "Ternary",
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

BinaryMode = Literal["deterministic", "stochastic", "xnor"]
TernaryMode = Literal["twn", "ttq"]


# --------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------


def sign_pm1(w: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``w >= 0`` else ``-1`` (``torch.sign`` would map 0 to 0, a third value)."""
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))


def ste(latent: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Value of ``quantized``, gradient passed unchanged to ``latent`` (straight-through).

    Written as ``q + (w - w)`` rather than ``w + (q - w)``: the former is bit-exact (``w - w`` is
    exactly 0), the latter rounds, and bit-packing needs exactly one magnitude per channel.
    """
    return quantized.detach() + (latent - latent.detach())


def xnor_scales(w: torch.Tensor) -> torch.Tensor:
    """Per-output-channel ``alpha_c = mean |W_c|``, shaped to broadcast against ``w``."""
    dims = tuple(range(1, w.dim()))
    return w.abs().mean(dim=dims, keepdim=True) if dims else w.abs()


def binarize(
    w: torch.Tensor, mode: BinaryMode = "deterministic", *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Binary weights (no STE): ``sign(w)``, a stochastic sign, or ``alpha_c * sign(w)``.

    Args:
        w: real-valued weights, output channel first.
        mode: ``"deterministic"``, ``"stochastic"`` (``P(+1) = clip((w + 1) / 2, 0, 1)``) or
            ``"xnor"``.
        generator: random source for ``"stochastic"``.

    Example:
        >>> binarize(torch.tensor([[0.2, -0.4]]), "xnor").tolist()
        [[0.30000001192092896, -0.30000001192092896]]
    """
    if mode == "deterministic":
        return sign_pm1(w)
    if mode == "stochastic":
        p = ((w + 1) / 2).clamp(0, 1)
        u = torch.rand(w.shape, generator=generator, device=w.device, dtype=w.dtype)
        return torch.where(u < p, torch.ones_like(w), -torch.ones_like(w))
    if mode == "xnor":
        return xnor_scales(w) * sign_pm1(w)
    raise ValueError(f"unknown binary mode {mode!r}; use deterministic, stochastic or xnor")


def twn_threshold(w: torch.Tensor, factor: float = 0.7) -> torch.Tensor:
    """TWN threshold ``delta = factor * mean |W|`` (the paper's approximation uses 0.7)."""
    return factor * w.abs().mean()


def ternarize_twn(w: torch.Tensor, factor: float = 0.7) -> torch.Tensor:
    """TWN ternary weights ``alpha * sign(w) * [|w| > delta]`` (no STE).

    ``alpha`` is the mean magnitude of the weights above the threshold, the closed-form minimiser
    of ``||W - alpha * T||^2`` for the fixed ternary pattern ``T``.

    Example:
        >>> ternarize_twn(torch.tensor([1.0, -0.5, 0.1, 0.0])).tolist()
        [0.75, -0.75, 0.0, 0.0]
    """
    delta = twn_threshold(w, factor)
    keep = w.abs() > delta
    alpha = w.abs()[keep].mean() if keep.any() else w.new_zeros(())
    return torch.where(keep, alpha * sign_pm1(w), torch.zeros_like(w))


def ternarize_ttq(
    w: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor, threshold: float = 0.05
) -> torch.Tensor:
    """TTQ ternary weights: ``wp`` where ``w > t*max|w|``, ``-wn`` where ``w < -t*max|w|``, else 0.

    Differentiable in ``wp`` and ``wn`` (their gradients are the summed gradients of their
    positions, as in the paper); use :class:`TernaryLinear` for the latent-weight STE.

    Example:
        >>> w = torch.tensor([1.0, -0.5, 0.01])
        >>> ternarize_ttq(w, torch.tensor(2.0), torch.tensor(3.0)).tolist()
        [2.0, -3.0, 0.0]
    """
    delta = threshold * w.detach().abs().max()
    pos = (w.detach() > delta).to(w.dtype)
    neg = (w.detach() < -delta).to(w.dtype)
    return wp * pos - wn * neg


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


def _layer_kwargs(m: nn.Module) -> dict[str, Any]:
    if isinstance(m, nn.Linear):
        return {
            "in_features": m.in_features,
            "out_features": m.out_features,
            "bias": m.bias is not None,
        }
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


def _init_kwargs(m: nn.Module) -> dict[str, Any]:
    kwargs = _layer_kwargs(m)
    kwargs["mode"] = m.mode
    if isinstance(m, TernaryLinear | TernaryConv2d):
        kwargs["threshold"] = m.threshold
    return kwargs


@torch.no_grad()
def _convert(module: nn.Module, cls: type[nn.Module], **options: Any) -> nn.Module:
    new = cls(**_layer_kwargs(module), **options)
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
        new = base(**_layer_kwargs(m)).to(device=m.weight.device, dtype=m.weight.dtype)
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
    """Bit-packed weights of every binary (1 bit) and ternary (2 bits) layer, by module name.

    Sizes: ``sum(p.nbytes for p in pack_low_bit(model).values())``; restore a weight exactly
    with :func:`~nnshrink.quantization.packbits.unpack_binary` / ``unpack_ternary``.
    """
    out: dict[str, PackedTensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, _LOW_BIT):
            was = m.training
            m.eval()
            w = m.quantized_weight().detach()
            m.train(was)
            is_binary = isinstance(m, BinaryLinear | BinaryConv2d)
            out[name] = pack_binary(w) if is_binary else pack_ternary(w)
    return out


# --------------------------------------------------------------------------------------------
# Configs and handlers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BinaryWeights(Config):
    """Binary weights: BinaryConnect (deterministic/stochastic) or XNOR-style scaled signs.

    Args:
        mode: ``"deterministic"``, ``"stochastic"`` or ``"xnor"``.
        keep_first: leave the first eligible layer in full precision (common practice; the
            BinaryConnect paper binarised every layer).
        keep_last: leave the last eligible layer in full precision.

    Example:
        >>> BinaryWeights(mode="xnor").to_dict()
        {'type': 'binary', 'mode': 'xnor', 'keep_first': True, 'keep_last': True}
    """

    kind: ClassVar[str] = "binary"
    mode: BinaryMode = "deterministic"
    keep_first: bool = True
    keep_last: bool = True

    def validate(self) -> None:
        if self.mode not in ("deterministic", "stochastic", "xnor"):
            raise ConfigError(f"binary.mode: {self.mode!r} is not deterministic/stochastic/xnor")


@dataclasses.dataclass(frozen=True)
class Ternary(Config):
    """Ternary weights: TWN (fixed threshold and scale) or TTQ (learned scales).

    Args:
        mode: ``"twn"`` or ``"ttq"``.
        twn_factor: TWN threshold ``delta = twn_factor * mean|W|`` (paper: 0.7).
        ttq_threshold: TTQ threshold ``delta = ttq_threshold * max|W|`` (paper: 0.05).
        keep_first, keep_last: leave the first/last eligible layer in full precision.

    Example:
        >>> Ternary(mode="ttq").mode
        'ttq'
    """

    kind: ClassVar[str] = "ternary"
    mode: TernaryMode = "twn"
    twn_factor: float = 0.7
    ttq_threshold: float = 0.05
    keep_first: bool = True
    keep_last: bool = True

    def validate(self) -> None:
        if self.mode not in ("twn", "ttq"):
            raise ConfigError(f"ternary.mode: {self.mode!r} is not 'twn' or 'ttq'")
        if not 0 < self.twn_factor < 10:
            raise ConfigError(f"ternary.twn_factor must be in (0, 10), got {self.twn_factor}")
        if not 0 < self.ttq_threshold < 1:
            raise ConfigError(f"ternary.ttq_threshold must be in (0, 1), got {self.ttq_threshold}")


@dataclasses.dataclass
class LowBitRow:
    """Per-layer result of :class:`BinaryWeights` / :class:`Ternary`."""

    name: str
    type: str
    replaced_by: str
    weights: int
    float_bytes: int
    packed_bytes: int


def _targets(model: nn.Module, config: Any, filter_fn: Any) -> list[tuple[str, nn.Module]]:
    layers = [
        (n, m)
        for n, m in named_layers(model, (nn.Linear, nn.Conv2d), filter_fn)
        if type(m) in (nn.Linear, nn.Conv2d)
    ]
    if not layers:
        raise ValueError(
            f"{config.kind}: no nn.Linear/nn.Conv2d layer to convert (check filter_fn)"
        )
    if any(n == "" for n, _ in layers):
        raise ValueError(f"{config.kind}: pass a container model, not a bare layer")
    first, last = layers[0][0], layers[-1][0]
    return [
        (n, m)
        for n, m in layers
        if not ((config.keep_first and n == first) or (config.keep_last and n == last))
    ]


def _replace_all(
    model: nn.Module, pairs: list[tuple[str, nn.Module, nn.Module]]
) -> list[LowBitRow]:
    packed = {}
    for name, _, new in pairs:
        packed[name] = pack_low_bit(nn.Sequential(new))["0"]
    rows = [
        LowBitRow(
            name,
            type(old).__name__,
            type(new).__name__,
            old.weight.numel(),
            old.weight.numel() * old.weight.element_size(),
            packed[name].nbytes,
        )
        for name, old, new in pairs
    ]
    for name, _, new in pairs:
        set_submodule(model, name, new)
    return rows


@register_handler(BinaryWeights)
def _apply_binary(
    model: nn.Module,
    config: BinaryWeights,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[LowBitRow]:
    pairs = []
    for name, m in _targets(model, config, filter_fn):
        cls = BinaryLinear if isinstance(m, nn.Linear) else BinaryConv2d
        pairs.append((name, m, _convert(m, cls, mode=config.mode)))
    if config.mode != "xnor":
        clip_latent_(nn.ModuleList([new for _, _, new in pairs]))
    return _replace_all(model, pairs)


@register_handler(Ternary)
def _apply_ternary(
    model: nn.Module,
    config: Ternary,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[LowBitRow]:
    threshold = config.twn_factor if config.mode == "twn" else config.ttq_threshold
    pairs = []
    for name, m in _targets(model, config, filter_fn):
        cls = TernaryLinear if isinstance(m, nn.Linear) else TernaryConv2d
        pairs.append((name, m, _convert(m, cls, mode=config.mode, threshold=threshold)))
    return _replace_all(model, pairs)


for _cls in _LOW_BIT:
    register_module(_cls, _init_kwargs)
