"""Least-squares reconstruction of the layers that read pruned channels.

Removing channels (or heads, or MLP neurons) takes inputs away from the next layer, whose
weights were trained for all of them. Channel pruning as He, Zhang and Sun (2017, "Channel
Pruning for Accelerating Very Deep Neural Networks") and ThiNet (Luo et al. 2017) do it refits
that layer: with ``X`` its inputs in the pruned model and ``Y`` its outputs in the dense model
on the same data, the new weights solve ``min ||X W^T + b - Y||^2`` (plus a small ridge term),
so the layer's output is the dense one as nearly as the kept inputs allow. Layers are refit in
forward order, each from the inputs of the model as already refit, so later layers also absorb
the error left by earlier ones.

Statistics are accumulated per batch as ``X^T X`` and ``X^T Y`` in float64; rows are tokens
(Linear, Hugging Face ``Conv1D``) or output positions with their unfolded input patches
(``Conv2d``, ``groups=1``); with keyword inputs carrying a 2-D ``attention_mask`` (a
tokenizer's output), padding tokens are left out. A refit that would not lower the layer's own
output error on the data keeps the old weights.

Example:
    >>> _ = torch.manual_seed(0)
    >>> dense = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> pruned = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4))
    >>> state = {k: v[:12] if k.startswith("0.") else v for k, v in dense.state_dict().items()}
    >>> pruned.load_state_dict({**state, "2.weight": dense[2].weight.detach()[:, :12]})
    <All keys matched successfully>
    >>> rows = reconstruct(pruned, dense, torch.randn(256, 8), ["2"])
    >>> rows[0]["error_after"] < rows[0]["error_before"]
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..masks import weight_matrix
from ..oneshot.calibration import calibration_batches, forward_order, run_batches
from ..oneshot.layers import input_rows, is_candidate, unsupported_reason

__all__ = ["reconstruct", "reconstructable"]


def reconstructable(module: nn.Module) -> bool:
    """Linear, GPT-2 ``Conv1D`` or ungrouped zero-padded ``Conv2d``: layers refit as a matrix."""
    return is_candidate(module) and unsupported_reason(module) is None


def _output_rows(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):  # (N, C, H, W) -> one row per position, as input_rows
        return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def _out_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Conv2d) else -1


def _dims_out(module: nn.Module) -> int:
    return int(weight_matrix(module).shape[0])


def _bias(module: nn.Module) -> torch.Tensor | None:
    bias = getattr(module, "bias", None)
    return bias if isinstance(bias, torch.Tensor) else None


class _Normal:
    """``X^T X``, ``X^T Y`` and ``||Y||^2`` of one layer (float64; a ones column for the bias)."""

    def __init__(self, module: nn.Module) -> None:
        self.module, self.with_bias = module, _bias(module) is not None
        self.gram: torch.Tensor | None = None
        self.cross: torch.Tensor | None = None
        self.y_sq, self.rows = 0.0, 0

    def add(self, x: torch.Tensor, y: torch.Tensor, tokens: torch.Tensor | None = None) -> None:
        real = None
        if tokens is not None and not isinstance(self.module, nn.Conv2d):
            if x.dim() == 3 and tuple(x.shape[:2]) == tuple(tokens.shape):
                real = tokens.reshape(-1).to(x.device)
        x = input_rows(self.module, x).to(torch.float64)
        y = _output_rows(self.module, y).to(torch.float64)
        if real is not None:  # padding tokens are not data: leave their rows out
            x, y = x[real], y[real]
        if self.with_bias:
            x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
        gram, cross = x.T @ x, x.T @ y
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross
        self.y_sq += float((y * y).sum())
        self.rows += len(x)

    def current(self) -> torch.Tensor:
        """The layer's ``(in [+1], out)`` solution matrix as it is now."""
        w = weight_matrix(self.module).detach().to(torch.float64).T
        if self.with_bias:
            w = torch.cat([w, _bias(self.module).detach().to(torch.float64)[None, :]], dim=0)
        return w

    def error(self, w: torch.Tensor) -> float:
        """Relative output error ``||X w - Y|| / ||Y||`` of the solution ``w``."""
        assert self.gram is not None and self.cross is not None
        sq = float((w * (self.gram @ w)).sum() - 2 * (w * self.cross).sum()) + self.y_sq
        return max(sq, 0.0) ** 0.5 / max(self.y_sq, 1e-30) ** 0.5

    def solve(self, damp: float) -> torch.Tensor:
        assert self.gram is not None and self.cross is not None
        gram = self.gram.clone()
        gram.diagonal().add_(damp * float(gram.diagonal().mean()) + 1e-12)
        return torch.linalg.solve(gram, self.cross)

    def write(self, w: torch.Tensor) -> None:
        module = self.module
        cols = w.shape[0] - int(self.with_bias)
        with torch.no_grad():
            weight_matrix(module).copy_(w[:cols].T.to(module.weight.dtype))
            if self.with_bias:
                _bias(module).copy_(w[cols].to(module.weight.dtype))


def _token_mask(batch: Any) -> torch.Tensor | None:
    """The real (non-padding) tokens of a batch of keyword inputs with an ``attention_mask``."""
    mask = batch[1].get("attention_mask") if isinstance(batch[1], Mapping) else None
    return mask.bool() if torch.is_tensor(mask) and mask.dim() == 2 else None


def _layer_io(dense: nn.Module, ref: nn.Module, pruned: nn.Module, layer: nn.Module,
              batch: Any) -> tuple[torch.Tensor, torch.Tensor] | None:  # fmt: skip
    """``(layer's input in pruned, ref's output in dense)`` on one batch (each pass stops there)."""
    seen: dict[str, torch.Tensor] = {}
    # ref.forward, not ref(...): calling the module would re-enter the pre-hook
    run_batches(dense, [batch], {ref: lambda x: seen.__setitem__("y", ref.forward(x))},
                stop_at=ref)  # fmt: skip
    run_batches(pruned, [batch], {layer: lambda x: seen.__setitem__("x", x)}, stop_at=layer)
    return (seen["x"], seen["y"]) if "x" in seen and "y" in seen else None


def reconstruct(
    pruned: nn.Module,
    dense: nn.Module,
    example_inputs: Any,
    names: Sequence[str],
    *,
    kept_outputs: Mapping[str, torch.Tensor] | None = None,
    damp: float = 0.01,
) -> list[dict[str, Any]]:
    """Refit the layers ``names`` of ``pruned`` so their outputs match ``dense``'s on the data.

    Args:
        pruned: the pruned model (edited in place).
        dense: the model before pruning (same module names; not edited).
        example_inputs: the data: one batch (tensor, tuple, dict) or a list / loader of batches.
        names: layers of ``pruned`` to refit (those whose inputs were pruned); unsupported
            types are skipped.
        kept_outputs: ``{name: output positions of the dense layer that the pruned one kept}``
            for layers whose outputs were pruned too (their targets are those columns).
        damp: ridge term, as a fraction of the mean diagonal of ``X^T X``.

    Returns:
        One row per layer, in forward order: ``{"name", "rows", "error_before",
        "error_after", "refit"}`` (relative output errors against the dense layer's outputs).
    """
    batches = calibration_batches(example_inputs, kind="reconstruction")
    p_mods, d_mods = dict(pruned.named_modules()), dict(dense.named_modules())
    wanted = [p_mods[n] for n in dict.fromkeys(names)
              if n in p_mods and n in d_mods and reconstructable(p_mods[n])]  # fmt: skip
    names_of = {m: n for n, m in p_mods.items()}
    rows = []
    for layer in forward_order(pruned, batches[0], wanted):
        name = names_of[layer]
        ref, normal = d_mods[name], _Normal(layer)
        cols = (kept_outputs or {}).get(name)
        if cols is None and _dims_out(ref) != _dims_out(layer):
            continue  # outputs pruned, positions unknown: nothing to match them to
        for batch in batches:  # the same batch through both models, one layer at a time
            pair = _layer_io(dense, ref, pruned, layer, batch)
            if pair is not None:
                x, y = pair
                y = y if cols is None else y.index_select(_out_axis(ref), cols)
                normal.add(x, y, _token_mask(batch))
        if normal.gram is None:
            continue
        if normal.rows < len(normal.gram):
            # fewer equations than unknowns per output: the fit is exact on these rows and
            # only the ridge term decides the rest, so its in-sample error says nothing
            warnings.warn(
                f"reconstruct: {name} has {len(normal.gram)} inputs but the data gave only "
                f"{normal.rows} rows (tokens or positions); the refit may not carry over to "
                f"other inputs. Pass more example_inputs (a list of batches) for at least "
                f"{len(normal.gram)} rows.",
                stacklevel=2,
            )
        before = normal.error(normal.current())
        solution = normal.solve(damp)
        after = normal.error(solution)
        refit = after < before
        if refit:
            normal.write(solution)
        rows.append({"name": name, "rows": normal.rows, "error_before": round(before, 6),
                     "error_after": round(after if refit else before, 6), "refit": refit})  # fmt: skip
    return rows
