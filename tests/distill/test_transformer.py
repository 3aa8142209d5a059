"""Transformer layouts, attention relations against the models' own attention, and the
``tinybert`` / ``minilm`` Distiller methods (pruned and shallower students)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnshrink.distill import METHODS, Distiller, FeatureCapture, find_layout
from nnshrink.distill.transformer import resolve_layer_map
from nnshrink.distill.transformer_losses import attention_relation
from nnshrink.models.gpt import GPT


def _gpt(**kw) -> GPT:
    return GPT(**{"vocab_size": 40, "context": 12, "dim": 32, "depth": 4, "num_heads": 4, **kw})


def _prune_heads(model: GPT, block: int, keep_heads: list[int]) -> None:
    """Remove heads physically (what a head pruner does)."""
    attn = model.blocks[block].attn
    dh = attn.q.out_features // attn.num_heads
    keep = torch.cat([torch.arange(h * dh, (h + 1) * dh) for h in keep_heads])
    for name in ("q", "k", "v"):
        old = getattr(attn, name)
        new = nn.Linear(old.in_features, len(keep))
        new.weight.data, new.bias.data = old.weight.data[keep].clone(), old.bias.data[keep].clone()
        setattr(attn, name, new)
    o = nn.Linear(len(keep), attn.o.out_features)
    o.weight.data, o.bias.data = attn.o.weight.data[:, keep].clone(), attn.o.bias.data.clone()
    attn.o, attn.num_heads = o, len(keep_heads)


def test_every_method_is_listed_once():
    assert METHODS == ("kd", "fitnets", "at", "sp", "rkd", "tinybert", "minilm")


def test_gpt_layout_and_relations_equal_its_attention_probabilities():
    model = _gpt().eval()
    layout = find_layout(model)
    assert layout.blocks == tuple(f"blocks.{i}" for i in range(4)) and layout.causal
    assert layout.values[2] == "blocks.2.attn.v" and layout.heads == (4, 4, 4, 4)
    x = torch.randint(0, 40, (2, 10))
    names = [layout.queries[1], layout.keys[1], "blocks.1.attn.probs"]
    with torch.no_grad(), FeatureCapture(model, names) as cap:
        model(x)
    rel = attention_relation(cap[names[0]], cap[names[1]], 4, causal=True).exp()
    torch.testing.assert_close(rel, cap["blocks.1.attn.probs"], rtol=1e-5, atol=1e-6)


def test_hf_bert_relations_equal_its_output_attentions():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     attn_implementation="eager")  # fmt: skip
    model = transformers.BertModel(config).eval()
    layout = find_layout(model)
    assert layout.queries[0] == "encoder.layer.0.attention.self.query" and not layout.causal
    assert layout.heads == (4, 4)
    ids, mask = torch.randint(0, 100, (2, 7)), torch.tensor([[1] * 5 + [0] * 2, [1] * 7])
    with torch.no_grad(), FeatureCapture(model, [layout.queries[1], layout.keys[1]]) as cap:
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    rel = attention_relation(cap[layout.queries[1]], cap[layout.keys[1]], 4, attention_mask=mask)
    torch.testing.assert_close(rel.exp(), out.attentions[1], rtol=1e-5, atol=1e-6)


def test_layouts_of_llama_and_refusals():
    transformers = pytest.importorskip("transformers")
    llama = transformers.LlamaModel(transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
    assert find_layout(llama).keys[1] == "layers.1.self_attn.k_proj"
    gpt2 = transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(ValueError, match="c_attn"):
        find_layout(gpt2)
    with pytest.raises(ValueError, match="no nn.ModuleList"):
        find_layout(nn.Sequential(nn.Linear(2, 2)))


def test_layer_map_forms():
    assert resolve_layer_map("last", 2, 6) == {1: 5}
    assert resolve_layer_map(None, 2, 4) == {0: 1, 1: 3}
    with pytest.raises(ValueError, match="out of range"):
        resolve_layer_map({2: 0}, 2, 4)
    with pytest.raises(ValueError, match="one of"):
        resolve_layer_map("first", 2, 4)


@pytest.mark.parametrize("method", ["tinybert", "minilm"])
def test_a_copy_of_the_teacher_has_zero_loss(method):
    teacher = _gpt().eval()
    x = torch.randint(0, 40, (2, 12))
    d = Distiller(teacher, copy.deepcopy(teacher), method, example_inputs=x, temperature=1.0)
    assert d.loss(x).item() == pytest.approx(0.0, abs=1e-6)
    expected = {"tinybert": {"output", "hidden", "attention"}, "minilm": {"attention", "value"}}
    assert set(d.last_terms) == expected[method]
    assert d.transformer.layer_map == ({i: i for i in range(4)} if method == "tinybert"
                                       else {3: 3})  # fmt: skip


def test_head_pruned_narrow_shallow_student_trains_through_projections():
    torch.manual_seed(0)
    teacher = _gpt().eval()
    student = _gpt(dim=24, depth=2, num_heads=4)
    _prune_heads(student, 0, [0, 2])  # 2 heads of width 6 left in block 0
    x, y = torch.randint(0, 40, (4, 12)), torch.randint(0, 40, (4, 12))
    d = Distiller(teacher, student, "tinybert", example_inputs=x, relation_heads=2,
                  temperature=1.0, alpha=0.5, hidden_weight=100.0)  # fmt: skip
    assert d.transformer.layer_map == {0: 1, 1: 3}
    assert set(d.transformer.projections) == {"0", "1"}  # widths 24 -> 32 differ
    assert {n for n, _ in d.named_parameters()} >= {"transformer.projections.0.weight"}
    d.loss(x, y)
    assert set(d.last_terms) == {"ce", "output", "hidden", "attention"}
    proj = d.transformer.projections["1"].weight.detach().clone()
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    terms = []
    for _ in range(10):
        loss = d.loss(x)  # unlabelled transfer data: no cross-entropy
        opt.zero_grad()
        loss.backward()
        opt.step()
        terms.append(dict(d.last_terms))
    assert set(terms[0]) == {"output", "hidden", "attention"}
    assert terms[-1]["hidden"] < 0.5 * terms[0]["hidden"]
    assert sum(terms[-1].values()) < 0.8 * sum(terms[0].values())
    assert not torch.equal(proj, d.transformer.projections["1"].weight)
    assert all(p.grad is None for p in teacher.parameters())
    with pytest.raises(ValueError, match="relation heads"):  # 12 wide q does not split into 8
        Distiller(teacher, student, "tinybert", example_inputs=x, relation_heads=8)


def test_stages_and_argument_errors():
    teacher = _gpt().eval()
    x = torch.randint(0, 40, (2, 12))
    d = Distiller(teacher, _gpt(), "tinybert", example_inputs=x)
    d.stage = "hint"
    d.loss(x)
    assert set(d.last_terms) == {"hidden", "attention"}
    d.stage = "kd"
    d.loss(x)
    assert set(d.last_terms) == {"output"}
    with pytest.raises(ValueError, match="needs example_inputs"):
        Distiller(teacher, _gpt(), "minilm")
    with pytest.raises(ValueError, match="drop `features`"):
        Distiller(teacher, _gpt(), "minilm", {"blocks.0": "blocks.0"}, example_inputs=x)
    with pytest.raises(ValueError, match="output_loss"):
        Distiller(teacher, _gpt(), "tinybert", example_inputs=x, output_loss="l1")


def test_padding_does_not_change_the_loss_of_an_encoder():
    """Keyword batches with an attention mask: padded tokens are out of every term."""
    transformers = pytest.importorskip("transformers")

    def bert(layers):
        config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=4, intermediate_size=64)  # fmt: skip
        return transformers.BertModel(config).eval()  # default (sdpa) attention

    torch.manual_seed(0)
    teacher, student = bert(2), bert(1)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    batch = {"input_ids": torch.randint(1, 60, (2, 6)), "attention_mask": mask}
    d = Distiller(teacher, student, "tinybert", example_inputs=batch, output_loss="mse")
    loss = d.loss(batch)
    other = dict(batch, input_ids=batch["input_ids"].clone())
    other["input_ids"][0, 4:] = 7  # different padding tokens
    assert d.loss(other).item() == pytest.approx(loss.item(), rel=1e-5)
    assert loss.item() > 0 and set(d.last_terms) == {"output", "hidden", "attention"}
