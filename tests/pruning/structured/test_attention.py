"""PrunableMultiheadAttention against PyTorch's own nn.MultiheadAttention, and its slicers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nnshrink.pruning.structured import PrunableMultiheadAttention, UnsupportedModelError, ops_for


def _mha(batch_first=True, **kw):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, **kw).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_() if mha.in_proj_bias is not None else None
    return mha


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_same_outputs_as_torch_with_masks(batch_first, need_weights):
    mha = _mha(batch_first)
    ours = PrunableMultiheadAttention.from_torch(mha).eval()
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    if not batch_first:
        q, kv = q.transpose(0, 1), kv.transpose(0, 1)
    pad = torch.tensor([[False] * 6 + [True], [False] * 7])
    causal = torch.triu(torch.ones(5, 7, dtype=torch.bool), 1)
    for kwargs in ({}, {"key_padding_mask": pad}, {"attn_mask": causal},
                   {"attn_mask": causal.float() * -1e9, "key_padding_mask": pad}):  # fmt: skip
        want = mha(q, kv, kv, need_weights=need_weights, **kwargs)
        got = ours(q, kv, kv, need_weights=need_weights, **kwargs)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        if need_weights:
            torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)


def test_separate_kdim_vdim_unbatched_and_causal():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 2, kdim=6, vdim=10, batch_first=True).eval()
    ours = PrunableMultiheadAttention.from_torch(mha)
    assert ours.in_proj_weight is None and ours.k_proj_weight.shape == (16, 6)
    q, k, v = torch.randn(5, 16), torch.randn(7, 6), torch.randn(7, 10)
    torch.testing.assert_close(ours(q, k, v)[0], mha(q, k, v)[0], atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 5, 16)
    self_attn = _mha()
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    want = self_attn(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]
    got = PrunableMultiheadAttention.from_torch(self_attn)(
        x, x, x, attn_mask=mask, is_causal=True, need_weights=False
    )[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_pruning_heads_equals_zeroing_their_output_columns():
    mha = _mha()
    x = torch.randn(2, 5, 16)
    ref = PrunableMultiheadAttention.from_torch(_mha())
    with torch.no_grad():
        ref.out_proj.weight[:, 4:8] = 0  # head 1
        ref.out_proj.weight[:, 12:16] = 0  # head 3
    ops = ops_for(mha)
    new = ops.convert(mha)
    ops_for(new).slicer("heads")(new, torch.tensor([0, 2]))
    assert new.num_heads == 2 and new.in_proj_weight.shape == (24, 16)
    assert new.out_proj.in_features == 8 and new.in_proj_bias.shape == (24,)
    torch.testing.assert_close(new(x, x, x)[0], ref(x, x, x)[0], atol=1e-5, rtol=1e-5)


def test_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    ours = PrunableMultiheadAttention.from_torch(_mha())

    class Self(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = ours

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    x = torch.randn(2, 5, 16)
    path = tmp_path / "mha.onnx"
    torch.onnx.export(Self().eval(), (x,), str(path), dynamo=False, input_names=["x"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, Self().eval()(x).detach().numpy(), atol=1e-5, rtol=1e-5)


def test_bias_kv_is_refused():
    mha = nn.MultiheadAttention(16, 4, add_bias_kv=True)
    with pytest.raises(UnsupportedModelError, match="add_bias_kv"):
        PrunableMultiheadAttention.from_torch(mha)
