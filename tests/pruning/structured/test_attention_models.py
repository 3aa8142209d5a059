"""Attention written with torch.nn (MultiheadAttention, TransformerEncoder) and by hand, and a
ConvNeXt block: pruned == zeroed dense; what cannot be pruned is refused before any edit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nnshrink as ns
from nnshrink.pruning import UnsupportedModelError
from nnshrink.pruning.structured import (
    PrunableMultiheadAttention,
    StructuredPruner,
    StructuredPruning,
    build_groups,
)

from .helpers import check_equivalent, check_heads_equivalent, randomize_

X = torch.randn(2, 1, 28, 28)


class MHAViT(nn.Module):
    """Patch conv -> tokens -> blocks of nn.MultiheadAttention (or nn.TransformerEncoder)."""

    def __init__(self, d=32, heads=4, depth=2, encoder=False, norm_first=True, batch_first=True):
        super().__init__()
        self.patch = nn.Conv2d(1, d, 7, 7)
        self.cls = nn.Parameter(torch.randn(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 17, d))
        self.encoder, self.batch_first = encoder, batch_first
        if encoder:
            layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, norm_first=norm_first,
                                               batch_first=batch_first)  # fmt: skip
            self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        else:
            self.blocks = nn.ModuleList(
                nn.ModuleDict(dict(ln1=nn.LayerNorm(d), ln2=nn.LayerNorm(d),
                                   attn=nn.MultiheadAttention(d, heads, batch_first=True),
                                   fc1=nn.Linear(d, 2 * d), fc2=nn.Linear(2 * d, d)))
                for _ in range(depth)
            )  # fmt: skip
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        if self.encoder:
            x = x if self.batch_first else x.transpose(0, 1)
            x = self.blocks(x)
            x = x if self.batch_first else x.transpose(0, 1)
        else:
            for b in self.blocks:
                h = b["ln1"](x)
                x = x + b["attn"](h, h, h)[0]
                x = x + b["fc2"](F.gelu(b["fc1"](b["ln2"](x))))
        return self.head(self.norm(x[:, 0]))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"encoder": True}, {"encoder": True, "norm_first": False},
     {"encoder": True, "batch_first": False}],
)  # fmt: skip
def test_multihead_attention_models_prune_heads_and_mlp(kwargs):
    torch.manual_seed(0)
    model = MHAViT(**kwargs).eval()
    plan, rows = check_heads_equivalent(model, X)
    assert sorted({r.kind for r in rows}) == ["channels", "heads"]
    attn = model.blocks.layers[0].self_attn if kwargs else model.blocks[0]["attn"]
    assert isinstance(attn, PrunableMultiheadAttention) and attn.num_heads == 2
    assert attn.in_proj_weight.shape == (3 * 16, 32)  # parameter names kept
    assert {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"} <= {
        n for n, _ in attn.named_parameters()
    }


def test_encoder_layer_fast_path_still_runs_after_pruning():
    torch.manual_seed(0)
    model = MHAViT(encoder=True).eval()
    ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=X)
    with torch.inference_mode():  # the conditions of the fused fast path: it must step aside
        out = model(X)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_swapped_attention_rebuilds_from_its_description():
    from nnshrink.io.arch import build, describe

    torch.manual_seed(0)
    model = MHAViT().eval()
    ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=X)
    attn = model.blocks[0]["attn"]
    rebuilt = build(describe(attn))
    rebuilt.load_state_dict(attn.state_dict())
    h = torch.randn(2, 17, 32)
    torch.testing.assert_close(rebuilt.eval()(h, h, h)[0], attn(h, h, h)[0])


@pytest.mark.xfail(reason="needs nnshrink.io to record plain attribute changes (num_heads); the "
                   "io engineer's change this round", strict=False)  # fmt: skip
def test_pruned_zoo_vit_survives_a_checkpoint(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = ns.models.create("vit", depth=2, dim=32)
    x = torch.randn(2, 1, 28, 28)
    ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=x)
    save_checkpoint(model, tmp_path / "vit.nns")
    loaded, _ = load_checkpoint(tmp_path / "vit.nns")
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


class HandAttention(nn.Module):
    """q/k/v projections, heads from attributes, explicit softmax, an output projection."""

    def __init__(self, d=32, heads=4, merge="attribute"):
        super().__init__()
        self.num_heads, self.head_dim, self.merge = heads, d // heads, merge
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (p(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q, self.k, self.v))  # fmt: skip
        w = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim**-0.5, dim=-1)
        y = (w @ v).transpose(1, 2)
        # nanoGPT writes view(b, t, c): the input width, which pruning heads changes
        y = y.reshape(b, t, c) if self.merge == "input-width" else y.reshape(b, t, -1)
        return self.o(y)


class HandBlock(nn.Module):
    def __init__(self, merge="attribute"):
        super().__init__()
        self.embed = nn.Linear(12, 32)
        self.ln = nn.LayerNorm(32)
        self.attn = HandAttention(merge=merge)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attn(self.ln(x))
        return self.head((x + self.mlp(x)).mean(1))


def test_hand_written_attention_prunes_heads_and_updates_num_heads():
    torch.manual_seed(0)
    model = HandBlock().eval()
    check_heads_equivalent(model, torch.randn(2, 5, 12))
    assert model.attn.num_heads == 2 and model.attn.q.out_features == 16
    assert model.mlp[0].out_features == 32


def test_zoo_vit_fused_qkv_prunes_whole_heads():
    torch.manual_seed(0)
    model = ns.models.create("vit", depth=2, dim=32, num_heads=4).eval()
    plan, rows = check_heads_equivalent(model, X)
    assert [(r.channels_before, r.channels_after) for r in rows if r.kind == "heads"] == [
        (4, 2)
    ] * 2
    assert model.blocks[0].attn.num_heads == 2 and model.blocks[0].attn.qkv.out_features == 48


def test_attention_that_reshapes_to_the_input_width_is_refused_untouched():
    torch.manual_seed(0)
    model = HandBlock(merge="input-width").eval()
    x = torch.randn(2, 5, 12)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedModelError, match="'attn'.*nothing was changed|nothing was "
                       "changed.*'attn'"):  # fmt: skip
        ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.attn.num_heads == 4
    # strict=False skips the heads that break the forward and prunes the rest
    with pytest.warns(UserWarning, match="attn"):
        summary = ns.compress_(model, StructuredPruning(sparsity=0.5, strict=False),
                               example_inputs=x).summary  # fmt: skip
    assert model.attn.num_heads == 4 and model.mlp[0].out_features == 32
    assert any("attn" in s for s in summary.skipped)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's channels-first LayerNorm: permutes inside its own forward."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, LayerNorm over channels through permute, MLP, layer scale, residual."""

    def __init__(self, dim=16):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 4, 4)
        self.stem_norm = LayerNorm2d(16)
        self.block = ConvNeXtBlock()
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(self.block(self.stem_norm(self.stem(x))).mean((2, 3)))


def test_convnext_block_with_channels_last_norms():
    torch.manual_seed(0)
    model = ConvNeXtish().eval()
    groups = [g for g in build_groups(model, X) if g.prunable]
    stream = next(g for g in groups if any(e.name == "stem" for e in g.edits))
    # the residual stream couples the stem, both LayerNorms, the depthwise conv and gamma
    names = {(e.name, e.dim) for e in stream.edits}
    assert {("stem_norm", "out"), ("block.norm", "out"), ("block", "param:gamma:0")} <= names
    StructuredPruner(model, X, StructuredPruning(sparsity=0.5)).prune()
    assert model.stem.out_channels == 8 == model.block.gamma.numel() == model.block.dwconv.groups
    assert model.stem_norm.normalized_shape == (8,) and model.block.pwconv1.out_features == 32
    assert model(X).shape == (2, 10)


def test_convnext_mlp_alone_is_output_preserving():
    torch.manual_seed(0)
    model = randomize_(ConvNeXtish())
    check_equivalent(model, X, StructuredPruning(sparsity=0.5, exclude=("stem",)))
    assert model.block.pwconv1.out_features == 32 and model.stem.out_channels == 16


@pytest.mark.parametrize("encoder", [False, True])
def test_prune_hidden_reaches_multihead_attention_widths(encoder):
    torch.manual_seed(0)
    model = MHAViT(encoder=encoder).eval()
    ns.compress_(model, StructuredPruning(sparsity=0.5, prune_hidden=True), example_inputs=X)
    attn = model.blocks.layers[0].self_attn if encoder else model.blocks[0]["attn"]
    assert (attn.embed_dim, attn.num_heads, attn.out_dim) == (16, 2, 16)
    assert model.cls.shape == (1, 1, 16) and model.pos.shape == (1, 17, 16)
    assert model(X).shape == (2, 10)
