"""Least-squares reconstruction after structured pruning, against a direct ridge solve."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.pruning import StructuredPruning


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 6))


def test_refit_equals_a_direct_ridge_solve_and_lowers_the_error():
    dense = _mlp()
    x = torch.randn(400, 10)
    plain, refit = copy.deepcopy(dense), copy.deepcopy(dense)
    ns.compress_(plain, StructuredPruning(sparsity=0.5), example_inputs=x)
    summary = ns.compress_(refit, StructuredPruning(sparsity=0.5, reconstruct=True),
                           example_inputs=x)  # fmt: skip
    # the oracle: the kept hidden units' activations, a bias column, the ridge normal equations
    with torch.no_grad():
        h = torch.relu(plain[0](x)).double()
        h1 = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], dim=1)
        gram = h1.T @ h1
        gram += 0.01 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        w = torch.linalg.solve(gram, h1.T @ dense(x).double())
    assert torch.allclose(refit[2].weight.double(), w[:-1].T, atol=1e-5)
    assert torch.allclose(refit[2].bias.double(), w[-1], atol=1e-5)
    assert torch.equal(refit[0].weight, plain[0].weight)  # producers are not refit
    (row,) = summary.reconstructed
    assert row["name"] == "2" and row["rows"] == 400 and row["refit"]
    assert row["error_after"] < 0.6 * row["error_before"]  # 0.58 -> 0.30 here
    held_out = torch.randn(400, 10)
    with torch.no_grad():
        assert _rel(refit(held_out), dense(held_out)) < _rel(plain(held_out), dense(held_out))


def test_layers_whose_outputs_are_pruned_too_match_the_kept_columns():
    torch.manual_seed(1)
    dense = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 4, 1),
    )  # fmt: skip
    x = torch.randn(16, 3, 8, 8)
    plain, refit = copy.deepcopy(dense), copy.deepcopy(dense)
    ns.compress_(plain, StructuredPruning(sparsity=0.5), example_inputs=x)
    summary = ns.compress_(refit, StructuredPruning(sparsity=0.5, reconstruct=True),
                           example_inputs=x)  # fmt: skip
    rows = {r["name"]: r for r in summary.reconstructed}
    assert set(rows) == {"2", "4"}  # conv 2 reads pruned channels and has pruned outputs
    assert all(r["error_after"] <= r["error_before"] for r in rows.values())
    assert rows["2"]["rows"] == 16 * 64
    # conv 2's outputs match the dense conv's kept channels on its (pruned) inputs
    kept = torch.nonzero(torch.isin(dense[2].bias, plain[2].bias)).reshape(-1)  # (biases differ)
    assert len(kept) == plain[2].out_channels == 8
    with torch.no_grad():
        y_dense = dense[2](torch.relu(dense[0](x)))[:, kept]
        y_plain = plain[2](torch.relu(plain[0](x)))
        y_refit = refit[2](torch.relu(refit[0](x)))
        assert _rel(y_refit, y_dense) < _rel(y_plain, y_dense)
        assert _rel(refit(x), dense(x)) < _rel(plain(x), dense(x))


def test_resnet_one_shot_output_closer_to_the_dense_model():
    torch.manual_seed(0)
    dense = ns.models.create("resnet20", in_channels=1)
    dense.eval()
    x = torch.randn(64, 1, 16, 16)
    plain, refit = copy.deepcopy(dense), copy.deepcopy(dense)
    ns.compress_(plain, StructuredPruning(sparsity=0.4), example_inputs=x)
    summary = ns.compress_(refit, StructuredPruning(sparsity=0.4, reconstruct=True),
                           example_inputs=x)  # fmt: skip
    assert summary.reconstructed and all(r["refit"] for r in summary.reconstructed[:3])
    assert [m.out_channels for m in refit.modules() if isinstance(m, nn.Conv2d)] == [
        m.out_channels for m in plain.modules() if isinstance(m, nn.Conv2d)
    ]
    held_out = torch.randn(64, 1, 16, 16)
    with torch.no_grad():
        assert _rel(refit(held_out), dense(held_out)) < _rel(plain(held_out), dense(held_out))


class _Tokens(nn.Module):
    """A token MLP called as Hugging Face models are: keyword inputs with an attention mask."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(6, 24), nn.Linear(24, 6)

    def forward(self, inputs_embeds, attention_mask=None):
        return self.down(torch.relu(self.up(inputs_embeds)))


def test_padding_tokens_are_left_out_of_the_fit():
    torch.manual_seed(2)
    dense = _Tokens()
    x = torch.randn(8, 20, 6)
    mask = torch.ones(8, 20, dtype=torch.long)
    mask[:, 12:] = 0
    x[:, 12:] = 1e3  # padding positions: garbage that would dominate an unmasked fit
    inputs = {"inputs_embeds": x, "attention_mask": mask}
    plain, refit = copy.deepcopy(dense), copy.deepcopy(dense)
    ns.compress_(plain, StructuredPruning(sparsity=0.5), example_inputs=inputs)
    summary = ns.compress_(refit, StructuredPruning(sparsity=0.5, reconstruct=True),
                           example_inputs=inputs)  # fmt: skip
    assert summary.reconstructed[0]["rows"] == 8 * 12
    with torch.no_grad():
        real = x[:, :12].reshape(-1, 6)
        h = torch.relu(plain.up(real)).double()
        h1 = torch.cat([h, torch.ones(len(h), 1, dtype=h.dtype)], dim=1)
        gram = h1.T @ h1
        gram += 0.01 * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        w = torch.linalg.solve(gram, h1.T @ dense.down(torch.relu(dense.up(real))).double())
    assert torch.allclose(refit.down.weight.double(), w[:-1].T, atol=1e-5)


def test_too_few_rows_for_the_fit_warns_and_names_the_fix():
    dense = _mlp()
    plain = copy.deepcopy(dense)
    with pytest.warns(UserWarning, match=r"2 has 17 inputs but the data gave only 8 rows"):
        ns.compress_(dense, StructuredPruning(sparsity=0.5, reconstruct=True),
                     example_inputs=torch.randn(8, 10))  # fmt: skip
    ns.compress_(plain, StructuredPruning(sparsity=0.5), example_inputs=torch.randn(8, 10))
    assert plain[0].weight.shape == dense[0].weight.shape  # same structure, refit or not
