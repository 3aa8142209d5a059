"""Input-feature pruning: drop the input features (pixels, channels) a layer barely uses.

Channel pruning cannot shrink the layer that reads the model's input: the input is fixed, so the
first layer keeps every input column however little it uses them. On MNIST about 100 of the 784
pixels never change in the training set and a few hundred more are nearly constant, yet the
first ``Linear`` of an MLP spends most of the model's parameters on them (392,000 of 545,000 in
the 784-500-300-10 network-slimming MLP). Selecting input features with a group-sparsity
penalty on the input columns is the input-layer form of structured pruning (Scardapane et al.
2017, "Group sparse regularization for deep neural networks"; Wen et al. 2016).

``compress_(model, InputPruning(keep=400), example_inputs=batch)`` finds the layer that reads the
model's input (or the one named by ``layer``), scores each input feature by its expected
contribution ``||W[:, j]|| * std(x_j)`` on ``batch``, and replaces the layer ``L`` by
``nn.Sequential(SelectFeatures(kept), L')`` where ``L'`` is a physically smaller copy of ``L``
with only the kept input columns. The removed features' means are folded into the bias, so a
feature that is constant on the data is removed exactly. ``SelectFeatures`` is an index select
(one ``Gather`` in ONNX); the model's input signature does not change.

Train with :class:`GroupLassoCallback` on that layer first (as network slimming trains with the
L1 penalty on BN scales) so that the unused columns shrink and the cut costs less.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nnshrink._deprecated import module_getattr, warn
from nnshrink.core import (
    Config,
    ConfigError,
    as_input_tuple,
    forward_with_hooks,
    register_handler,
    set_submodule,
)
from nnshrink.io import layer_kwargs, register_module
from nnshrink.metrics import count_macs_per_sample, count_params
from nnshrink.train.callbacks import Callback

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class SelectFeatures(nn.Module):
    """Keep the features ``index`` of dimension ``dim`` (``x.index_select(dim, index)``).

    Args:
        num_selected: how many features are kept (the length of the ``index`` buffer).
        dim: the feature dimension (1: a Linear's features or a conv's channels).

    Example:
        >>> sel = SelectFeatures(2); sel.index.copy_(torch.tensor([0, 2]))
        tensor([0, 2])
        >>> sel(torch.tensor([[1.0, 2.0, 3.0]])).tolist()
        [[1.0, 3.0]]
    """

    def __init__(self, num_selected: int, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("index", torch.arange(num_selected))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(self.dim, self.index)

    def extra_repr(self) -> str:
        return f"num_selected={self.index.numel()}, dim={self.dim}"


register_module(SelectFeatures, lambda m: {"num_selected": m.index.numel(), "dim": m.dim})


def feature_statistics(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of a layer's input (feature dim 1).

    Args:
        inputs: ``(N, F)`` or ``(N, C, *spatial)``; statistics over every dim but 1.

    Example:
        >>> mean, std = feature_statistics(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        >>> mean.tolist(), std.tolist()
        ([1.0, 1.0], [1.0, 0.0])
    """
    flat = inputs.detach().transpose(0, 1).reshape(inputs.shape[1], -1).double()
    std, mean = torch.std_mean(flat, dim=1, correction=0)
    return mean.float(), std.float()


def column_norms(weight: torch.Tensor) -> torch.Tensor:
    """L2 norm of each input slice ``weight[:, j]`` of a Linear / conv weight.

    Example:
        >>> column_norms(torch.tensor([[3.0, 0.0], [4.0, 1.0]])).tolist()
        [5.0, 1.0]
    """
    return weight.detach().transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)


def feature_contribution(weight: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Expected contribution of each input feature: ``||W[:, j]|| * std(x_j)``.

    A feature whose value never changes contributes only a constant (folded into the bias), so
    its score is 0 whatever its weights; a feature with large weights and a large spread scores
    high.

    Args:
        weight: the layer's weight, input features along dim 1.
        std: the features' standard deviations on real data (:func:`feature_statistics`).

    Example:
        >>> feature_contribution(torch.tensor([[3.0, 1.0], [4.0, 1.0]]),
        ...                      torch.tensor([1.0, 0.0])).tolist()
        [5.0, 0.0]
    """
    return column_norms(weight) * std


def group_lasso_penalty(weight: torch.Tensor, strength: float) -> None:
    """Add the group-lasso subgradient ``strength * W[:, j] / ||W[:, j]||`` to ``weight.grad``.

    The penalty ``strength * sum_j ||W[:, j]||`` pulls whole input columns to zero together (the
    group form of L1). Call it between ``backward()`` and ``optimizer.step()``.

    Args:
        weight: a Linear / conv weight (input features along dim 1) whose ``.grad`` is set.
        strength: the penalty coefficient.

    Example:
        >>> w = torch.tensor([[3.0, 0.0], [4.0, 0.0]], requires_grad=True)
        >>> w.grad = torch.zeros(2, 2); group_lasso_penalty(w, 0.5); w.grad.tolist()
        [[0.30000001192092896, 0.0], [0.4000000059604645, 0.0]]
    """
    w = weight.detach()
    shape = [1, w.shape[1]] + [1] * (w.dim() - 2)
    norms = column_norms(w).clamp_min(1e-12).reshape(shape)
    if weight.grad is None:
        weight.grad = torch.zeros_like(weight)
    weight.grad.add_(w / norms, alpha=strength)


class GroupLassoCallback(Callback):
    """Training callback applying :func:`group_lasso_penalty` to some layers' input columns.

    Args:
        strength: the penalty coefficient (1e-3 for the MNIST MLP in ``benchmarks/slimming_mlp.py``).
        layers: the Linear / conv layers to penalise: modules, or qualified names in the trained
            model (e.g. the one :func:`input_layer` finds).

    Example:
        >>> from nnshrink.train import fit  # doctest: +SKIP
        >>> fit(model, loader, epochs=10, callbacks=[GroupLassoCallback(1e-3, ["1"])])  # doctest: +SKIP
    """

    def __init__(self, strength: float, layers: Sequence[str | nn.Module]) -> None:
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        if isinstance(layers, (str, nn.Module)) or not layers:
            raise ValueError("layers must be a non-empty list of layers or names, e.g. ['1']")
        self.strength = strength
        self.layers = list(layers)

    def on_after_backward(self, model: nn.Module) -> None:
        for layer in self.layers:
            module = model.get_submodule(layer) if isinstance(layer, str) else layer
            group_lasso_penalty(module.weight, self.strength)


def input_layer(model: nn.Module, example_inputs: Any) -> str:
    """Name of the first Linear / conv layer that reads the model's input (reshaped at most).

    Found on one forward pass: the first such layer whose input equals the model's (only)
    input tensor up to a reshape, such as ``nn.Flatten``.

    Args:
        model: the model.
        example_inputs: one input tensor (a tuple of one); use a batch of real data.

    Raises:
        ValueError: several inputs, or no layer reads the input directly; both say to pass
            ``layer=`` instead.

    Example:
        >>> input_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.randn(3, 2, 2))
        '1'
    """
    inputs = as_input_tuple(example_inputs)
    if len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor):
        raise ValueError(
            "input_layer: the model takes several inputs; name the layer with layer='...'"
        )
    x = inputs[0]
    found: list[str] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], out: Any, name: str) -> None:
        seen = args[0] if args else None
        if found or not isinstance(seen, torch.Tensor) or seen.numel() != x.numel():
            return
        if torch.equal(seen.reshape(x.shape), x):
            found.append(name)

    handles = [
        m.register_forward_hook(lambda mod, args, out, name=n: hook(mod, args, out, name))
        for n, m in model.named_modules()
        if isinstance(m, _LAYERS)
    ]
    forward_with_hooks(model, inputs, handles)
    if not found:
        raise ValueError(
            "input_layer: no Linear / Conv layer reads the model's input directly (it is "
            "transformed first, e.g. normalised); name the layer to prune with layer='...'"
        )
    return found[0]


@dataclasses.dataclass(frozen=True)
class InputPruning(Config):
    """Remove the input features a layer uses least (by default the layer reading the input).

    Args:
        sparsity: fraction of the layer's input features to remove (ignored when ``keep`` is
            set). Deprecated alias: ``ratio`` (removal in 0.6).
        keep: number of input features to keep.
        layer: qualified name of the Linear / conv layer; default: :func:`input_layer`.
        criterion: ``"contribution"`` (``||W[:, j]|| * std(x_j)`` on ``example_inputs``),
            ``"l2"`` (``||W[:, j]||``, data-free) or ``"random"`` (a baseline).
        fold_mean: add ``W[:, j] * mean(x_j)`` of the removed features to the bias, which makes
            removing a constant feature exact (Linear, or conv without padding).
        seed: seed for ``criterion="random"``.

    Example:
        >>> cfg = InputPruning(keep=400)
        >>> Config.from_dict(cfg.to_dict()) == cfg
        True
    """

    kind: ClassVar[str] = "input-pruning"
    renamed: ClassVar[dict[str, Any]] = {"ratio": "sparsity"}

    sparsity: float = 0.5
    keep: int | None = None
    layer: str | None = None
    criterion: Literal["contribution", "l2", "random"] = "contribution"
    fold_mean: bool = True
    seed: int = 0

    @property
    def ratio(self) -> float:
        """Deprecated name of :attr:`sparsity` (removal in 0.6)."""
        warn("input-pruning.ratio", "input-pruning.sparsity")
        return self.sparsity

    def validate(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ConfigError(f"input-pruning.sparsity must be in [0, 1), got {self.sparsity}")
        if self.keep is not None and self.keep < 1:
            raise ConfigError(f"input-pruning.keep must be >= 1, got {self.keep}")
        if self.criterion not in ("contribution", "l2", "random"):
            raise ConfigError(
                f"input-pruning.criterion: {self.criterion!r} is not 'contribution', 'l2' or "
                "'random'"
            )


@dataclasses.dataclass
class InputPruningSummary:
    """What :class:`InputPruning` did: the layer, how many features it kept, and which (MACs per
    sample)."""

    layer: str
    features_before: int
    features_after: int
    kept: list[int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-able)."""
        return dataclasses.asdict(self)


def _layer_input(model: nn.Module, layer: nn.Module, inputs: tuple[Any, ...]) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    forward_with_hooks(model, inputs, [handle])
    if not seen:
        raise ValueError("InputPruning: the layer was not called on example_inputs")
    return seen[0]


def select_input_features(
    layer: nn.Module, keep: torch.Tensor, mean: torch.Tensor | None = None
) -> nn.Sequential:
    """``nn.Sequential(SelectFeatures(keep), smaller layer)`` computing the same as ``layer``
    when the removed features equal ``mean`` (or 0 when ``mean`` is None).

    Args:
        layer: an ``nn.Linear`` or ungrouped ``nn.ConvNd`` (not modified).
        keep: sorted indices of the input features to keep.
        mean: per-feature means to fold into the bias for the removed features; for a conv
            with padding the fold is exact only away from the borders, so it is skipped.

    Example:
        >>> lin = nn.Linear(3, 2)
        >>> new = select_input_features(lin, torch.tensor([0, 2]))
        >>> x = torch.tensor([[1.0, 0.0, 2.0]])
        >>> torch.allclose(new(x), lin(x))
        True
    """
    weight = layer.weight.detach()
    removed = torch.ones(weight.shape[1], dtype=torch.bool, device=weight.device)
    removed[keep] = False
    bias = layer.bias.detach().clone() if layer.bias is not None else None
    exact_fold = isinstance(layer, nn.Linear) or all(p == 0 for p in _padding(layer))
    if mean is not None and exact_fold and bool(removed.any()):
        # a removed feature held at its mean adds W[:, j] * mean_j (summed over the kernel)
        expand = [1, -1] + [1] * (weight.dim() - 2)
        shift = weight[:, removed] * mean.to(weight)[removed].reshape(expand)
        shift = shift.sum(dim=tuple(range(1, weight.dim())))
        if bias is not None or bool(shift.abs().max() > 0):
            bias = shift if bias is None else bias + shift
    new = type(layer)(**_layer_kwargs(layer, len(keep), bias is not None))
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight[:, keep])
        if bias is not None:
            new.bias.copy_(bias)
    select = SelectFeatures(len(keep)).to(weight.device)
    select.index.copy_(keep)
    return nn.Sequential(select, new)


def _padding(layer: nn.Module) -> tuple[int, ...]:
    pad = layer.padding
    if isinstance(pad, str):
        return (0,) if pad == "valid" else (1,)
    return tuple(pad)


def _layer_kwargs(layer: nn.Module, in_features: int, bias: bool) -> dict[str, Any]:
    kwargs = {**layer_kwargs(layer), "bias": bias}
    kwargs["in_features" if isinstance(layer, nn.Linear) else "in_channels"] = in_features
    return kwargs


@register_handler(InputPruning)
def _apply(
    model: nn.Module,
    config: InputPruning,
    *,
    example_inputs: Any = None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> InputPruningSummary:
    """Replace the input-reading layer by a feature select + a smaller layer (in place)."""
    if example_inputs is None:
        raise ValueError(
            "InputPruning needs example_inputs: a batch of real data (e.g. 1,000 training "
            "samples) to find the input layer and measure each feature's spread"
        )
    inputs = as_input_tuple(example_inputs)
    name = config.layer if config.layer is not None else input_layer(model, inputs)
    try:
        layer = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"InputPruning(layer={name!r}): the model has no such module") from None
    if not isinstance(layer, _LAYERS) or getattr(layer, "groups", 1) != 1:
        raise ValueError(
            f"InputPruning: {name!r} is a {type(layer).__name__}; only nn.Linear and ungrouped "
            "nn.Conv1d/2d/3d layers can lose input features"
        )
    if filter_fn is not None and not filter_fn(layer, name):
        raise ValueError(f"InputPruning: filter_fn excludes the layer {name!r}")
    features = layer.weight.shape[1]
    keep_n = config.keep if config.keep is not None else features - int(config.sparsity * features)
    if keep_n > features:
        raise ValueError(
            f"InputPruning(keep={keep_n}): {name!r} has only {features} input features"
        )
    needs_data = config.criterion == "contribution" or config.fold_mean
    mean = std = None
    if needs_data:
        seen = _layer_input(model, layer, inputs)
        if seen.shape[0] < 2:
            raise ValueError(
                "InputPruning: example_inputs has one sample, so the features' spread is "
                "unknown; pass a batch of real data (hundreds of samples) or criterion='l2' "
                "with fold_mean=False"
            )
        mean, std = feature_statistics(seen)
    if config.criterion == "contribution":
        scores = feature_contribution(layer.weight, std)
    elif config.criterion == "l2":
        scores = column_norms(layer.weight)
    else:
        gen = torch.Generator().manual_seed(config.seed)
        scores = torch.rand(features, generator=gen)
    # stable order: ties (e.g. the many constant pixels, all scoring 0) keep the lower index
    order = torch.sort(scores.cpu(), descending=True, stable=True).indices
    keep = order[:keep_n].sort().values.to(layer.weight.device)
    params_before, macs_before = count_params(model), count_macs_per_sample(model, inputs)
    set_submodule(
        model, name, select_input_features(layer, keep, mean if config.fold_mean else None)
    )
    return InputPruningSummary(
        name, features, keep_n, keep.tolist(), params_before, count_params(model), macs_before,
        count_macs_per_sample(model, inputs),
    )  # fmt: skip


__getattr__ = module_getattr(__name__)  # InputPruningResult -> InputPruningSummary
