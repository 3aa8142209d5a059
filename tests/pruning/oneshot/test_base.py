"""The one-shot driver: what is skipped and why; a real Hugging Face GPT-2 with keyword batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.pruning import SparseGPT, Wanda
from nnshrink.pruning.masks import is_nm


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.unused = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.b.weight = self.a.weight  # shared weight: pruned once
        self.dw = nn.Conv2d(2, 2, 3, groups=2)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.b(self.a(x)))


def test_skipped_layers_are_reported_and_left_dense():
    model = _Tied()
    result = ns.compress_(model, Wanda(), example_inputs=torch.randn(16, 8))
    skipped = dict(result.summary.skipped)
    assert "shares its weight with a" in skipped["b"]
    assert "grouped conv" in skipped["dw"]
    assert skipped["unused"] == "not called on the calibration data"
    assert [r.name for r in result.summary.rows] == ["a.weight"]
    assert not hasattr(model.unused, "weight_mask") and not hasattr(model.head, "weight_mask")
    assert result.summary.to_dict()["method"] == "wanda"


@pytest.mark.slow
def test_hugging_face_gpt2_conv1d_with_keyword_batches():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=64,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    batches = [{"input_ids": torch.randint(0, 64, (4, 16))} for _ in range(2)]
    result = ns.compress_(model, SparseGPT(pattern="2:4"), example_inputs=batches, measure=False)
    names = [r.name for r in result.summary.rows]
    assert names[0] == "transformer.h.0.attn.c_attn.weight" and len(names) == 8
    assert not hasattr(model.lm_head, "weight_mask")  # the head (tied to the embedding) is dense
    c_fc = model.transformer.h[0].mlp.c_fc  # Conv1D: weight (in, out); groups run along "in"
    assert is_nm(c_fc.weight.detach().T != 0, 2, 4)
    out = model(**batches[0]).logits
    assert torch.isfinite(out).all()
