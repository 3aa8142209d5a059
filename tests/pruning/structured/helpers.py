"""Oracle for structured pruning: a pruned model equals the dense one with those channels zeroed."""

from __future__ import annotations

import copy

import torch
from torch import nn

from nnshrink.pruning.structured import StructuredPruner, StructuredPruning

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that every term matters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def zero_removed_(model: nn.Module, plan) -> None:
    """Zero the output weights/bias (and norm gamma/beta) of every channel the plan removes."""
    with torch.no_grad():
        for group, keep in plan:
            mask = torch.zeros(group.size, dtype=torch.bool)
            mask[keep] = True
            for edit in group.edits:
                if edit.dim != "out":
                    continue
                removed = torch.nonzero(~mask[edit.index]).reshape(-1)
                m = model.get_submodule(edit.name)
                if isinstance(m, nn.modules.conv._ConvTransposeNd):
                    m.weight[:, removed] = 0
                elif isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
                    m.weight[removed] = 0
                elif not isinstance(m, NORMS):
                    continue
                if getattr(m, "weight", None) is not None and isinstance(m, NORMS):
                    m.weight[removed] = 0
                if getattr(m, "bias", None) is not None:
                    m.bias[removed] = 0


def _removed(group, keep, edit) -> torch.Tensor:
    mask = torch.zeros(group.size, dtype=torch.bool)
    mask[keep] = True
    return torch.nonzero(~mask[edit.index]).reshape(-1)


def zero_consumers_(model: nn.Module, plan) -> None:
    """Zero what the removed channels / heads feed: input columns of the consuming layers and,
    for attention modules, the output-projection columns of the removed heads. Exact for any
    activation, so it is the oracle for heads and MLP neurons."""
    with torch.no_grad():
        for group, keep in plan:
            for edit in group.edits:
                removed = _removed(group, keep, edit)
                m = model.get_submodule(edit.name)
                if edit.dim == "heads":
                    d = m.head_dim
                    cols = (removed[:, None] * d + torch.arange(d)).reshape(-1)
                    m.out_proj.weight[:, cols] = 0
                elif edit.dim == "in" and type(m).__name__ == "Conv1D":
                    m.weight[removed] = 0
                elif edit.dim == "in" and isinstance(m, nn.Linear | nn.modules.conv._ConvNd):
                    m.weight[:, removed] = 0


def logits(out):
    """The main tensor of a model output (a tensor, a tuple or a Hugging Face ModelOutput)."""
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, tuple | list):
        return out[0]
    return out


def check_heads_equivalent(model: nn.Module, x, config: StructuredPruning | None = None):
    """Prune ``model``; it must equal the dense copy with removed heads / neurons zeroed."""
    model.eval()
    pruner = StructuredPruner(model, x, config or StructuredPruning(sparsity=0.5))
    plan = pruner.plan()
    assert plan and any(int(k.numel()) < g.size for g, k in plan), "the plan removes nothing"
    ref = copy.deepcopy(model)
    zero_consumers_(ref, plan)
    with torch.no_grad():
        expected = logits(ref(x))
    pruner.check(plan)
    rows = StructuredPruner.apply(plan)
    with torch.no_grad():
        got = logits(model(x))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    return plan, rows


def check_equivalent(
    model: nn.Module,
    x,
    config: StructuredPruning | None = None,
    dtype: torch.dtype = torch.float32,
):
    """Prune ``model`` in place; assert it matches the zeroed dense copy. Returns (plan, ref).

    Deep nets with large activations (ResNet-56 outputs ~1e3) need ``dtype=torch.float64`` so that
    rounding from a different summation order stays far below the 1e-4 tolerance.
    """
    randomize_(model).to(dtype)
    x = tuple(t.to(dtype) for t in x) if isinstance(x, tuple) else x.to(dtype)
    pruner = StructuredPruner(model, x, config or StructuredPruning(ratio=0.5))
    plan = pruner.plan()
    assert plan, "nothing prunable"
    assert any(int(k.numel()) < g.size for g, k in plan), "the plan removes nothing"
    ref = copy.deepcopy(model)
    zero_removed_(ref, plan)
    with torch.no_grad():
        expected = ref(*x) if isinstance(x, tuple) else ref(x)
    StructuredPruner.apply(plan)
    with torch.no_grad():
        got = model(*x) if isinstance(x, tuple) else model(x)
    assert got.shape == expected.shape
    diff = (got - expected).abs().max().item()
    assert diff <= 1e-4, f"pruned output differs from zeroed dense output by {diff}"
    return plan, ref


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
