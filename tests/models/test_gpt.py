"""The zoo GPT: parameter count, causality, attention against PyTorch's, prunable heads, export."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nnshrink.models import create, input_kind, spec_of
from nnshrink.models.gpt import GPT, CausalSelfAttention


def _small(**kw) -> GPT:
    return GPT(**{"vocab_size": 50, "context": 16, "dim": 32, "depth": 2, "num_heads": 4, **kw})


def test_default_parameter_count_by_formula():
    v, c, d, depth, hidden = 256, 128, 256, 4, 1024
    per_block = 4 * (d * d + d) + (d * hidden + hidden) + (hidden * d + d) + 2 * 2 * d
    expected = v * d + c * d + depth * per_block + 2 * d + d * v  # untied head, no bias
    model = create("gpt")
    assert sum(p.numel() for p in model.parameters()) == expected == 3_323_392
    assert model.head.weight.data_ptr() != model.tok_emb.weight.data_ptr()  # untied
    assert input_kind("gpt") == "tokens" and input_kind("resnet20") == "image"
    assert spec_of(create("gpt", depth=2))["kwargs"]["depth"] == 2


def test_attention_matches_pytorch_sdpa():
    attn = CausalSelfAttention(32, 4, context=16).eval()
    x = torch.randn(3, 10, 32)
    q, k, v = (m(x).view(3, 10, 4, 8).transpose(1, 2) for m in (attn.q, attn.k, attn.v))
    expected = attn.o(
        F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(3, 10, 32)
    )
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_future_tokens_do_not_change_past_logits():
    model = _small().eval()
    a = torch.randint(0, 50, (1, 12))
    b = a.clone()
    b[0, 7:] = (b[0, 7:] + 1) % 50
    with torch.no_grad():
        la, lb = model(a), model(b)
    torch.testing.assert_close(la[:, :7], lb[:, :7])
    assert not torch.allclose(la[:, 7:], lb[:, 7:])
    with pytest.raises(AssertionError, match="longer than the model's context"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_removing_a_head_equals_zeroing_its_output_columns():
    """What a head pruner does (rows of q/k/v, columns of o, num_heads) keeps the model running,
    and gives the dense model's output with that head silenced."""
    model = _small().eval()
    x = torch.randint(0, 50, (2, 9))
    attn = model.blocks[0].attn
    keep = torch.tensor([i for i in range(32) if not 8 <= i < 16])  # drop head 1 of 4
    zeroed = copy.deepcopy(model)
    zeroed.blocks[0].attn.o.weight.data[:, 8:16] = 0
    for name in ("q", "k", "v"):
        lin = getattr(attn, name)
        lin.weight.data, lin.bias.data = lin.weight.data[keep], lin.bias.data[keep]
        lin.out_features = 24
    attn.o.weight.data = attn.o.weight.data[:, keep]
    attn.o.in_features = 24
    attn.num_heads = 3
    with torch.no_grad():
        torch.testing.assert_close(model(x), zeroed(x), rtol=1e-5, atol=1e-5)


def test_traces_with_fx_and_exports_to_onnx_runtime():
    import onnxruntime as ort

    from nnshrink.export import export_onnx

    model = _small().eval()
    x = torch.randint(0, 50, (2, 16))
    traced = torch.fx.symbolic_trace(model)  # what structured pruning's fx tracer needs
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))
    session = ort.InferenceSession(export_onnx(model, x), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)


def test_checkpoint_rebuilds_by_name(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = create("gpt", dim=32, depth=1, num_heads=2, context=8).eval()
    save_checkpoint(model, tmp_path / "gpt.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "gpt.safetensors")
    x = torch.randint(0, 256, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
