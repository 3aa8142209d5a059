"""Hugging Face transformers built from small configs: heads + MLP pruned, equal to the zeroed
dense model; hidden width opt-in; refusals leave the model untouched."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import nnshrink as ns
from nnshrink.pruning import UnsupportedModelError
from nnshrink.pruning.structured import StructuredPruner, StructuredPruning

from .helpers import check_heads_equivalent, logits

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


@pytest.fixture(autouse=True)
def _one_thread():
    # these models are tiny: a second thread only spins on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vit():
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64, image_size=28, patch_size=7,
                                 num_channels=1, num_labels=10)  # fmt: skip
    return transformers.ViTForImageClassification(cfg), torch.randn(2, 1, 28, 28), "classifier"


def _bert():
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=16, num_labels=3)  # fmt: skip
    return (transformers.BertForSequenceClassification(cfg), torch.randint(0, 50, (2, 10)),
            "classifier")  # fmt: skip


def _gpt2():
    cfg = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)  # fmt: skip
    return transformers.GPT2LMHeadModel(cfg), torch.randint(0, 50, (2, 10)), "lm_head"


def _llama():
    cfg = transformers.LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=64, max_position_embeddings=16,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)  # fmt: skip
    return transformers.LlamaForCausalLM(cfg), torch.randint(0, 50, (2, 10)), "lm_head"


MODELS = {"vit": _vit, "bert": _bert, "gpt2": _gpt2, "llama": _llama}


def _build(name, attn=None):
    torch.manual_seed(0)
    model, x, head = MODELS[name]()
    if attn is not None:
        model.set_attn_implementation(attn)
    return model.eval(), x, head


@pytest.mark.parametrize(("name", "attn"), [("vit", None), ("bert", None), ("gpt2", None),
                                            ("llama", None), ("llama", "eager"),
                                            ("gpt2", "eager")])  # fmt: skip
def test_heads_and_mlp_pruned_equal_the_zeroed_dense_model(name, attn):
    model, x, head = _build(name, attn)
    plan, rows = check_heads_equivalent(model, x, StructuredPruning(sparsity=0.5, exclude=(head,)))
    kinds = {g.kind for g, _ in plan}
    assert kinds == {"heads", "channels"}  # the hidden width is kept by default
    heads = [(r.channels_before, r.channels_after) for r in rows if r.kind == "heads"]
    # GQA (Llama: 4 query heads, 2 key/value heads) prunes whole key/value groups
    assert heads == ([(2, 1)] * 2 if name == "llama" else [(4, 2)] * 2)


def test_the_call_users_know_works_unchanged_with_deprecated_names():
    for name in MODELS:
        model, x, head = _build(name)
        params = sum(p.numel() for p in model.parameters())
        with pytest.warns(DeprecationWarning):
            result = ns.compress_(model, ns.StructuredPruning(ratio=0.5, ignore=(head,)),
                                  example_inputs=x)  # fmt: skip
        assert result.after["params"] < 0.75 * params, name
        assert result.summary.tracer == "eager"
        assert logits(model(x)).shape[0] == 2


def test_head_attributes_are_updated_by_nnshrink():
    model, x, _ = _build("gpt2")
    summary = ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=x).summary
    attn = model.transformer.h[0].attn
    assert (attn.num_heads, attn.split_size, attn.head_dim) == (2, 16, 8)
    assert summary.attributes["transformer.h.0.attn"]["num_heads"] == [4, 2]
    model, x, _ = _build("bert")
    ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=x)
    self_attn = model.bert.encoder.layer[1].attention.self
    assert (self_attn.num_attention_heads, self_attn.all_head_size) == (2, 16)


def test_head_sparsity_differs_from_the_mlp_amount():
    model, x, _ = _build("vit")
    ns.compress_(model, StructuredPruning(sparsity=0.25, head_sparsity=0.5), example_inputs=x)
    layer = model.vit.encoder.layer[0] if hasattr(model.vit, "encoder") else model.vit.layers[0]
    assert layer.attention.q_proj.out_features == 16  # 2 of 4 heads of 8
    assert layer.mlp.fc1.out_features == 48  # 25 % of 64 neurons removed


def test_prune_hidden_shrinks_the_residual_stream_and_keeps_tied_weights_tied():
    model, x, _ = _build("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    cfg = StructuredPruning(sparsity=0.5, prune_hidden=True)
    ns.compress_(model, cfg, example_inputs=x)
    assert model.transformer.wte.embedding_dim == 16 and model.transformer.ln_f.weight.shape == (
        16,
    )
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model(x).logits.shape == (2, 10, 50)
    model, x, _ = _build("vit")  # class token and position embedding are sliced too
    ns.compress_(model, cfg, example_inputs=x)
    assert model.vit.embeddings.position_embeddings.shape[-1] == 16
    assert model(x).logits.shape == (2, 10)


def test_prune_hidden_reaches_rmsnorm_of_llama():
    model, x, _ = _build("llama")
    ns.compress_(model, StructuredPruning(sparsity=0.5, prune_hidden=True), example_inputs=x)
    assert model.model.norm.weight.shape == (16,) and model.model.embed_tokens.embedding_dim == 16
    assert model(x).logits.shape == (2, 10, 50)


def test_refusal_leaves_the_model_bit_identical():
    model, x, _ = _build("bert")
    before = copy.deepcopy(model.state_dict())
    attrs = model.bert.encoder.layer[0].attention.self.__dict__.copy()
    with pytest.raises(UnsupportedModelError, match="no prunable groups"):
        ns.compress_(model, StructuredPruning(exclude=(".*",)), example_inputs=x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.bert.encoder.layer[0].attention.self.__dict__.keys() == attrs.keys()
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == 4


def test_pruned_model_exports_to_onnx_and_matches(tmp_path):
    import numpy as np
    import onnxruntime as ort

    model, x, _ = _build("vit")
    ns.compress_(model, StructuredPruning(sparsity=0.5), example_inputs=x)
    path = tmp_path / "vit.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, model(x).logits.detach().numpy(), atol=1e-4, rtol=1e-4)


def test_pruner_step_is_transactional():
    model, x, _ = _build("gpt2")
    before = copy.deepcopy(model.state_dict())
    pruner = StructuredPruner(model, x, StructuredPruning(sparsity=0.5))
    plan = pruner.plan()

    def boom(*args, **kwargs):
        raise RuntimeError("fails half-way")

    # the last group's slicing fails after the earlier groups were sliced
    plan[-1][0].prune = boom
    pruner._checked = lambda ratio, plan_, head_ratio=None: plan
    with pytest.raises(RuntimeError, match="half-way"):
        pruner.step(0.5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.transformer.h[0].attn.num_heads == 4


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_activation_criterion_scores_heads_and_neurons_by_what_the_next_layer_reads(name):
    # oracle: for every group, sqrt(sum ||W[:, j]||^2 * sum_rows x_j^2) over the consumer's
    # input columns j of each head / neuron, with x recorded by a plain hook on the consumer
    model, x, head = _build(name)
    cfg = StructuredPruning(sparsity=0.5, criterion="activation", exclude=(head,))
    pruner = StructuredPruner(model, x, cfg)
    groups = [g for g in pruner.groups() if g.kind in ("heads", "channels")]
    stats = pruner.input_statistics()
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda mod, a: seen.setdefault(mod, a[0].detach()))
             for m in model.modules() if m in stats]  # fmt: skip
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    checked = 0
    for group in groups:
        total = torch.zeros(group.size, dtype=torch.float64)
        for edit in group.edits:
            if edit.dim != "in" or edit.module not in seen:
                continue
            w = edit.module.weight.detach().double()
            w_sq = w.pow(2).sum(1) if type(edit.module).__name__ == "Conv1D" else w.pow(2).sum(0)
            xs = seen[edit.module].double()
            x_sq = xs.reshape(-1, xs.shape[-1]).pow(2).sum(0)
            total.index_add_(0, edit.index, w_sq * x_sq)
            checked += 1
        torch.testing.assert_close(group.scores("activation", input_sq=stats), total.sqrt())
    assert checked >= 4  # both blocks' attention outputs and MLP outputs
    before = sum(p.numel() for p in model.parameters())
    ns.compress_(model, cfg, example_inputs=x)
    assert sum(p.numel() for p in model.parameters()) < before
