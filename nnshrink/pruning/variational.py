"""Sparse variational dropout (Molchanov, Ashukha, Vetrov 2017): learn which weights to remove.

Every weight ``w`` gets its own Gaussian multiplicative noise, ``w ~ N(theta, alpha * theta**2)``,
parametrised additively by ``theta`` (the layer's ``weight``) and ``log_sigma2`` (``sigma**2 =
alpha * theta**2``, so gradients do not blow up for large ``alpha``). Training maximises the
evidence lower bound: the data term (cross-entropy) minus ``KL(q(w) || p(w)) / N`` under the
log-uniform prior, whose KL the paper approximates as
``k1 - k1 * sigmoid(k2 + k3 * log alpha) + 0.5 * log1p(1 / alpha)``. The KL term alone pushes
every ``alpha`` up; the data keeps the weights that matter precise. Weights with
``log alpha > threshold`` (3: dropout rate above 95 %) carry only noise and are removed.

The forward pass uses the local reparametrisation trick (one noise sample per pre-activation,
not per weight): ``mean = x @ theta``, ``var = x**2 @ sigma**2``, ``out = mean + sqrt(var) * eps``.
In ``eval()`` the layer computes with the sparse weight ``theta * (log alpha <= threshold)``,
exactly what :func:`nnshrink.finalize` leaves as a plain layer with zeros. The rest of Deep
Compression (k-means sharing, Huffman-coded ``.nns``) follows unchanged.

Example:
    >>> import torch, nnshrink as ns
    >>> model = ns.models.create("lenet300")
    >>> _ = ns.compress_(model, VariationalDropout())
    >>> criterion = ELBO(num_samples=60_000)
    >>> loss, logits = criterion(model.train(), torch.randn(8, 1, 28, 28), torch.zeros(8).long())
    >>> type(model[1]).__name__, bool(loss > 0)
    ('VariationalLinear', True)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..core import Config, ConfigError, LayerSelection, register_handler, set_submodule, transaction
from ..core.finalize import register_finalizer
from ..io import layer_kwargs, register_module

__all__ = [
    "ELBO",
    "VariationalConv2d",
    "VariationalDropout",
    "VariationalLinear",
    "VariationalRow",
    "kl_divergence",
    "kl_log_uniform",
    "strip_variational",
    "train_variational",
    "variational_sparsity",
]

# Molchanov et al. 2017, eq. 14: the fit of -KL(q || log-uniform prior) as a function of log alpha.
K1, K2, K3 = 0.63576, 1.87320, 1.48695
_LOG_ALPHA_RANGE = (-10.0, 10.0)  # beyond it the KL is flat and the gradient only adds noise
_EPS = 1e-8


def kl_log_uniform(log_alpha: torch.Tensor) -> torch.Tensor:
    """Approximate ``KL(N(theta, alpha theta^2) || log-uniform)`` per weight (>= 0, decreasing).

    Example:
        >>> [round(v, 3) for v in kl_log_uniform(torch.tensor([-8.0, 0.0, 8.0])).tolist()]
        [4.636, 0.431, 0.0]
    """
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha) + 0.5 * F.softplus(-log_alpha)


class _Variational:
    """What both variational layers share: ``log_sigma2``, ``log_alpha``, KL, the sparse weight."""

    weight: nn.Parameter
    bias: nn.Parameter | None
    log_sigma2: nn.Parameter
    threshold: float

    def _init_variational(self, threshold: float, init_log_sigma2: float) -> None:
        self.threshold = float(threshold)
        self.log_sigma2 = nn.Parameter(torch.empty_like(self.weight.detach()))
        self.reset_log_sigma2(init_log_sigma2)

    @torch.no_grad()
    def reset_log_sigma2(self, log_sigma2: float) -> None:
        """Start every weight at ``log sigma^2 = log_sigma2`` (the paper's -10: the same small
        noise for all, so small weights start near the threshold and go first), capped so that
        ``log alpha <= threshold - 1``: no weight is dropped before training."""
        cap = torch.log(self.weight.square() + _EPS) + (self.threshold - 1.0)
        self.log_sigma2.copy_(cap.clamp(max=log_sigma2))

    def log_alpha(self) -> torch.Tensor:
        """``log sigma^2 - log theta^2``, clamped to [-10, 10] (differentiable)."""
        log_alpha = self.log_sigma2 - torch.log(self.weight.square() + _EPS)
        return log_alpha.clamp(*_LOG_ALPHA_RANGE)

    def keep_mask(self) -> torch.Tensor:
        """Weights kept at the end: ``log alpha <= threshold``."""
        return self.log_alpha().detach() <= self.threshold

    def kl(self) -> torch.Tensor:
        """Sum of the per-weight KL terms (a scalar tensor)."""
        return kl_log_uniform(self.log_alpha()).sum()

    def sparse_weight(self) -> torch.Tensor:
        """``theta`` with the removed weights set to zero (what ``eval()`` computes with)."""
        return self.weight * self.keep_mask().to(self.weight.dtype)

    def represented_params(self) -> dict[str, int]:
        """Parameters the layer stands for (``log_sigma2`` is a training-time variance):
        ``params`` = weights + bias, ``nonzero_params`` = kept weights + non-zero bias."""
        bias = self.bias.detach() if self.bias is not None else torch.zeros(0)
        return {
            "params": self.weight.numel() + bias.numel(),
            "nonzero_params": int(self.keep_mask().sum()) + int((bias != 0).sum()),
        }

    def _noisy(self, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        return mean + torch.sqrt(var + _EPS) * torch.randn_like(mean)


class VariationalLinear(nn.Linear, _Variational):
    """``nn.Linear`` with sparse variational dropout on every weight.

    Args:
        in_features, out_features, bias: as ``nn.Linear``.
        threshold: ``log alpha`` above which a weight is removed (paper: 3).
        init_log_sigma2: initial ``log sigma^2`` (paper: -10), capped at ``log alpha =
            threshold - 1`` so that the layer computes exactly as the plain one until trained.

    Example:
        >>> layer = VariationalLinear(4, 2)
        >>> layer.eval()(torch.ones(1, 4)).shape, layer.keep_mask().all().item()
        (torch.Size([1, 2]), True)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        threshold: float = 3.0,
        init_log_sigma2: float = -10.0,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self._init_variational(threshold, init_log_sigma2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.sparse_weight(), self.bias)
        mean = F.linear(x, self.weight, self.bias)
        var = F.linear(x.square(), self.log_sigma2.exp())
        return self._noisy(mean, var)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, threshold={self.threshold}"


class VariationalConv2d(nn.Conv2d, _Variational):
    """``nn.Conv2d`` (zero padding) with sparse variational dropout on every weight.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``nn.Conv2d``.
        threshold: ``log alpha`` above which a weight is removed (paper: 3).
        init_log_sigma2: initial ``log sigma^2`` (capped as in :class:`VariationalLinear`).

    Example:
        >>> VariationalConv2d(1, 4, 3).train()(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 4, 6, 6])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        threshold: float = 3.0,
        init_log_sigma2: float = -10.0,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        self._init_variational(threshold, init_log_sigma2)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._conv(x, self.sparse_weight(), self.bias)
        mean = self._conv(x, self.weight, self.bias)
        var = self._conv(x.square(), self.log_sigma2.exp(), None)
        return self._noisy(mean, var)


_VARIATIONAL = (VariationalLinear, VariationalConv2d)


@torch.no_grad()
def _from_plain(module: nn.Module, threshold: float, init_log_sigma2: float) -> nn.Module:
    if type(module) is nn.Linear:
        new: nn.Module = VariationalLinear(
            module.in_features, module.out_features, module.bias is not None, threshold,
            init_log_sigma2,
        )  # fmt: skip
    else:
        new = VariationalConv2d(
            module.in_channels, module.out_channels, module.kernel_size, module.stride,
            module.padding, module.dilation, module.groups, module.bias is not None, threshold,
            init_log_sigma2,
        )  # fmt: skip
    new.to(device=module.weight.device, dtype=module.weight.dtype)
    new.weight.copy_(module.weight)
    new.reset_log_sigma2(init_log_sigma2)
    if module.bias is not None:
        new.bias.copy_(module.bias)
    return new


@torch.no_grad()
def _to_plain(module: nn.Module) -> nn.Module:
    if isinstance(module, VariationalLinear):
        plain: nn.Module = nn.Linear(module.in_features, module.out_features,
                                     module.bias is not None)  # fmt: skip
    else:
        plain = nn.Conv2d(
            module.in_channels, module.out_channels, module.kernel_size, module.stride,
            module.padding, module.dilation, module.groups, module.bias is not None,
        )  # fmt: skip
    plain.to(device=module.weight.device, dtype=module.weight.dtype)
    plain.weight.copy_(module.sparse_weight())
    if module.bias is not None:
        plain.bias.copy_(module.bias)
    return plain


# --------------------------------------------------------------------------------------------
# Config, handler, training helpers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VariationalDropout(Config, LayerSelection):
    """Replace ``nn.Linear``/``nn.Conv2d`` layers by their sparse-variational-dropout form.

    Then train with :class:`ELBO` (or :func:`train_variational`) and call
    :func:`nnshrink.finalize`: the layers become plain again, with the weights whose
    ``log alpha`` exceeds ``threshold`` set to zero.

    Args:
        threshold: ``log alpha`` above which a weight is removed (paper: 3, i.e. a dropout rate
            ``alpha / (1 + alpha)`` above 0.95).
        init_log_sigma2: initial ``log sigma^2`` of every weight (the paper's -10: small weights
            start with a large ``log alpha`` and go first), capped at ``log alpha = threshold -
            1`` so that no weight is dropped yet: the trained net computes exactly as before
            until training starts (uncapped, -10 would drop every weight below ~0.0015 at once).
        include, exclude, per_layer: layer selection (:class:`~nnshrink.core.LayerSelection`);
            a ``per_layer`` number sets ``threshold``.

    Example:
        >>> VariationalDropout(exclude=("@last",)).to_dict()["threshold"]
        3.0
    """

    kind: ClassVar[str] = "variational-dropout"
    amount_field: ClassVar[str] = "threshold"
    threshold: float = 3.0
    init_log_sigma2: float = -10.0

    def validate(self) -> None:
        if not math.isfinite(self.threshold):
            raise ConfigError(f"variational-dropout.threshold must be finite, got {self.threshold}")
        if not -20 <= self.init_log_sigma2 <= 0:
            raise ConfigError(
                "variational-dropout.init_log_sigma2 must be in [-20, 0] (start with little "
                f"noise: -10), got {self.init_log_sigma2}"
            )


@dataclasses.dataclass
class VariationalRow:
    """One layer made variational by :class:`VariationalDropout`."""

    name: str
    type: str
    weights: int
    threshold: float


@register_handler(VariationalDropout)
def _apply(
    model: nn.Module,
    config: VariationalDropout,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[VariationalRow]:
    candidates = ((n, m) for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d))
    layers = config.select(candidates, filter_fn=filter_fn, amount_field="threshold")
    if not layers:
        raise ValueError(
            "variational-dropout: no nn.Linear/nn.Conv2d layer selected (check include/exclude/"
            "per_layer and filter_fn)"
        )
    for layer in layers:
        if layer.name == "":
            raise ValueError(
                "variational-dropout: pass a container model (wrap the layer in nn.Sequential)"
            )
        m = layer.module
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise ValueError(
                f"variational-dropout: {layer.name} has padding_mode={m.padding_mode!r}; only "
                f"'zeros' is supported (leave it out with exclude=({layer.name!r},))"
            )
    rows, new_layers = [], []
    for layer in layers:
        threshold = float(layer.get("threshold", config.threshold))
        init = float(layer.get("init_log_sigma2", config.init_log_sigma2))
        new_layers.append((layer.name, _from_plain(layer.module, threshold, init)))
        rows.append(
            VariationalRow(
                layer.name, type(layer.module).__name__, layer.module.weight.numel(), threshold
            )  # fmt: skip
        )
    for name, new in new_layers:
        set_submodule(model, name, new)
    return rows


def kl_divergence(model: nn.Module) -> torch.Tensor:
    """Sum of the KL terms of every variational layer in ``model`` (0 when there is none)."""
    terms = [m.kl() for m in model.modules() if isinstance(m, _VARIATIONAL)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def variational_sparsity(model: nn.Module) -> float:
    """Fraction of the variational layers' weights that would be removed now."""
    kept = total = 0
    for m in model.modules():
        if isinstance(m, _VARIATIONAL):
            kept += int(m.keep_mask().sum())
            total += m.weight.numel()
    return 1.0 - kept / total if total else 0.0


class ELBO:
    """Training criterion ``cross-entropy + kl_weight(t) * KL / num_samples`` (the negative ELBO
    per sample) for :func:`nnshrink.train.fit` or a hand-written loop.

    The KL weight ramps linearly from 0 to ``kl_weight`` over the first ``warmup_steps`` training
    calls (steps are counted only in ``train()`` mode, so evaluation does not advance it): the
    network first adapts to the noise, then sparsifies.

    Args:
        num_samples: training-set size ``N``.
        kl_weight: final weight of the KL term (1 is the ELBO; smaller keeps more weights).
        warmup_steps: length of the linear ramp.

    Example:
        >>> ELBO(num_samples=60_000, warmup_steps=100).current_weight()
        0.0
    """

    def __init__(self, num_samples: int, kl_weight: float = 1.0, warmup_steps: int = 0) -> None:
        if num_samples < 1:
            raise ValueError(f"ELBO: num_samples must be >= 1, got {num_samples}")
        if kl_weight < 0 or warmup_steps < 0:
            raise ValueError("ELBO: kl_weight and warmup_steps must be >= 0")
        self.num_samples = num_samples
        self.kl_weight = kl_weight
        self.warmup_steps = warmup_steps
        self.steps = 0

    def current_weight(self) -> float:
        """The KL weight the next training step uses."""
        if self.warmup_steps == 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, self.steps / self.warmup_steps)

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if model.training:
            weight = self.current_weight()
            self.steps += 1
            if weight > 0:
                loss = loss + weight * kl_divergence(model).to(loss) / self.num_samples
        return loss, logits


def train_variational(
    model: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    epochs: int,
    num_samples: int | None = None,
    lr: float = 3e-4,
    log_sigma2_lr: float = 1e-2,
    kl_weight: float = 1.0,
    warmup_epochs: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a model holding variational layers with Adam on the :class:`ELBO` (all or nothing).

    Args:
        model: after ``compress_(model, VariationalDropout())``; edited in place.
        train_loader: ``(x, y)`` batches with ``len()``.
        epochs: training epochs (from a trained dense model, a few to tens).
        num_samples: training-set size ``N``; default ``len(loader.dataset)`` or batches x batch.
        lr: Adam's peak learning rate (cosine schedule) of the weights ``theta`` and every other
            parameter: small, so that the trained function moves little.
        log_sigma2_lr: Adam's peak learning rate of the noise variances ``log sigma^2``: large,
            so that ``log alpha`` can climb the ~7 units from its start to the threshold within
            a few epochs (Adam moves a parameter by about its rate per step).
        kl_weight: final KL weight (1 = the ELBO).
        warmup_epochs: epochs of the linear KL ramp.
        seed: training seed.
        progress: progress bar.

    Returns:
        ``{"history": per-epoch metrics, "sparsity": fraction removed at the end}``.
    """
    from ..train import fit

    if not any(isinstance(m, _VARIATIONAL) for m in model.modules()):
        raise ValueError(
            "train_variational: the model has no variational layer; apply "
            "compress_(model, VariationalDropout()) first"
        )
    steps = len(train_loader)  # type: ignore[arg-type]
    if num_samples is None:
        num_samples = _dataset_size(train_loader, steps)
    criterion = ELBO(num_samples, kl_weight, round(warmup_epochs * steps))
    variances = [m.log_sigma2 for m in model.modules() if isinstance(m, _VARIATIONAL)]
    ids = {id(p) for p in variances}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    optimizer = torch.optim.Adam(
        [{"params": others, "lr": lr}, {"params": variances, "lr": log_sigma2_lr}]
    )
    with transaction(model):
        history = fit(model, train_loader, epochs=epochs, optimizer=optimizer,
                      criterion=criterion, seed=seed, progress=progress)  # fmt: skip
    return {"history": history.epochs, "sparsity": variational_sparsity(model)}


def _dataset_size(loader: Any, steps: int) -> int:
    if isinstance(getattr(loader, "num_samples", None), int):  # nnshrink's TensorLoader
        return loader.num_samples
    data = getattr(loader, "dataset", None)  # torch DataLoader
    if data is not None and hasattr(data, "__len__"):
        return len(data)
    batch = getattr(loader, "batch_size", None)
    if isinstance(batch, int):
        return batch * steps
    raise ValueError("train_variational: pass num_samples (the training-set size)")


def strip_variational(model: nn.Module) -> list[str]:
    """Replace every variational layer by a plain layer holding its sparse weight (in place)."""
    names = [n for n, m in model.named_modules() if isinstance(m, _VARIATIONAL)]
    if "" in names:
        raise ValueError("strip_variational: pass the model that contains the layer")
    for name in names:
        set_submodule(model, name, _to_plain(model.get_submodule(name)))
    return names


for _cls in _VARIATIONAL:
    register_module(_cls, lambda m: {**layer_kwargs(m), "threshold": m.threshold})
register_finalizer("variational-dropout", strip_variational)
