"""Dynamic / weight-only int8 through compress_: real kernels, ONNX Runtime graphs, transformers."""

import copy

import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import nnshrink as ns
from nnshrink.pruning.structured import UnsupportedModelError
from nnshrink.quantization import PTQ, Int8DynamicLinear, WeightOnlyLinear
from tests.quantization.test_int8_linear import saturates_without_vnni
from tests.quantization.test_ptq import sqnr_db


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32), nn.ReLU(),
                         nn.Linear(32, 16))  # fmt: skip


def _optimized_ops(onnx_bytes, tmp_path):
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


def test_dynamic_torch_in_place_real_kernels():
    model = _mlp()
    x = torch.randn(8, 64)
    ref = model(x).detach()
    result = ns.compress_(model, PTQ(mode="dynamic", exclude=("@last",)))
    assert result.artifact is None and result.summary.runtime == "torch"
    assert [type(m).__name__ for m in model if not isinstance(m, nn.ReLU)] == [
        "Int8DynamicLinear", "Int8DynamicLinear", "Linear"]  # fmt: skip
    assert {r["kernel"] for r in result.summary.layers} == {"quantized::linear_dynamic (fbgemm)"}
    assert result.summary.skipped == {"4": "excluded by include/exclude/per_layer/filter_fn"}
    assert sqnr_db(ref, model(x)) > 30
    # the int8 codes stand for the same weights (counted as such), in a quarter of the bytes
    assert result.after["params"] == result.before["params"]
    from nnshrink.metrics import state_bytes

    assert state_bytes(model) < result.before["dense_bytes"] / 3


@saturates_without_vnni
def test_dynamic_onnxruntime_same_codes_as_the_model(tmp_path):
    model = _mlp()
    x = torch.randn(8, 64)
    ref = model(x).detach()
    result = ns.compress_(model, PTQ(mode="dynamic", backend="onnxruntime"), example_inputs=x)
    ops = result.artifact.op_types()
    assert ops["DynamicQuantizeLinear"] == 3 and ops["MatMulInteger"] == 3
    assert "DynamicQuantizeMatMul" in _optimized_ops(result.artifact.onnx_bytes, tmp_path)
    graph = onnx.load_from_string(result.artifact.onnx_bytes).graph
    codes = [onnx.numpy_helper.to_array(i) for i in graph.initializer if i.data_type == 3]
    assert any((c.T == model[0].weight_int8.numpy()).all() for c in codes if c.shape == (64, 128))
    out = result.artifact(x)
    assert sqnr_db(ref, out) > 30 and isinstance(model[0], Int8DynamicLinear)
    # both runtimes quantize activations the same way: they agree far better than with fp32
    assert (out - model(x)).abs().max() < 0.2 * (out - ref).abs().max() + 1e-4


@pytest.mark.parametrize("bits", [8, 4])
def test_weight_only_torch_and_onnxruntime(bits, tmp_path):
    model = _mlp()
    x = torch.randn(4, 64)
    ref = model(x).detach()
    result = ns.compress_(model, PTQ(mode="weight-only", bits=bits, backend="onnxruntime",
                                     group_size=32), example_inputs=x)  # fmt: skip
    assert all(isinstance(m, WeightOnlyLinear) for m in (model[0], model[2], model[4]))
    assert result.artifact.op_types()["MatMulNBits"] == 3
    assert torch.allclose(result.artifact(x), model(x), atol=1e-4)  # same codes, float compute
    assert sqnr_db(ref, model(x)) > (35 if bits == 8 else 15)
    kernels = {r["name"]: r["kernel"] for r in result.summary.layers}
    if bits == 4:  # int4 kernel needs out % 16 == 0: the 16-wide head has one, 32 and 128 too
        assert kernels["0"] == "aten::_weight_int4pack_mm_for_cpu"


def test_weight_only_per_layer_bits():
    model = _mlp()
    result = ns.compress_(model, PTQ(mode="weight-only", per_layer={"0": 4}))
    bits = {r["name"]: r["bits"] for r in result.summary.layers}
    assert bits == {"0": 4, "2": 8, "4": 8} and model[0].group_size == 32
    with pytest.raises(ns.ConfigError, match="runs \\[8\\]-bit kernels"):
        ns.compress_(_mlp(), PTQ(mode="dynamic", per_layer={"0": 4}))


def test_transformer_encoder_and_multihead_attention():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()
    x = torch.randn(2, 10, 32)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[1, 7:] = True
    with torch.no_grad():
        ref = model(x, src_key_padding_mask=mask)
    for config in (PTQ(mode="dynamic"), PTQ(mode="weight-only"),
                   PTQ(mode="dynamic", backend="fake")):  # fmt: skip
        m = copy.deepcopy(model)
        result = ns.compress_(m, config)
        with torch.no_grad():
            out = m(x, src_key_padding_mask=mask)
        assert sqnr_db(ref[~mask], out[~mask]) > 25
        skipped = result.summary.skipped
        assert set(skipped) == {"layers.0.self_attn.out_proj", "layers.1.self_attn.out_proj"}
        assert "F.multi_head_attention_forward" in skipped["layers.0.self_attn.out_proj"]
        assert len(result.summary.layers) == 4  # linear1, linear2 per layer
        assert any("fast path" in n for n in result.summary.notes)
        assert m.layers[0].activation_relu_or_gelu == 0 and not m.use_nested_tensor


@pytest.fixture(scope="module")
def tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=60,
        max_position_embeddings=32,
    )
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 60, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 9:] = 0
    return model, (ids, mask)


def test_hf_bert_dynamic_both_runtimes(tiny_bert):
    model, inputs = tiny_bert
    with torch.no_grad():
        ref = model(*inputs).last_hidden_state
    m = copy.deepcopy(model)
    result = ns.compress_(m, PTQ(mode="dynamic", backend="onnxruntime", exclude=("pooler.dense",)),
                          example_inputs=[inputs])  # fmt: skip
    assert len(result.summary.layers) == 12  # q, k, v, attention output, 2 FFN per layer
    assert isinstance(m.encoder.layer[0].attention.self.query, Int8DynamicLinear)
    with torch.no_grad():
        out = m(*inputs).last_hidden_state
    ort_out = result.artifact(*inputs)[0]  # outputs: (last_hidden_state, pooler_output)
    keep = inputs[1].bool()
    assert sqnr_db(ref[keep], out[keep]) > 20 and sqnr_db(ref[keep], ort_out[keep]) > 20
    assert result.artifact.op_types()["MatMulInteger"] == 12


def test_hf_bert_static_and_fake_do_not_crash(tiny_bert):
    model, inputs = tiny_bert
    with torch.no_grad():
        ref = model(*inputs).last_hidden_state
    for config in (PTQ(backend="fake"), PTQ(mode="weight-only", backend="fake", bits=4)):
        m = copy.deepcopy(model)
        ns.compress_(m, config, example_inputs=[inputs])
        with torch.no_grad():
            assert sqnr_db(ref, m(*inputs).last_hidden_state) > (10 if config.bits == 4 else 20)
    m = copy.deepcopy(model)
    result = ns.compress_(m, PTQ(batch_sizes=(1,)), example_inputs=[inputs])
    assert set(result.summary.unavailable) == {"torch-fx"}  # FX cannot trace HF models
    assert result.summary.runtime == "onnxruntime"
    assert result.artifact.op_types()["QuantizeLinear"] > 0


def test_gpt2_conv1d():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=60, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 60, (2, 12))
    with torch.no_grad():
        ref = model(ids, use_cache=False).logits
    for config in (PTQ(mode="dynamic"), PTQ(mode="weight-only"), PTQ(backend="fake")):
        m = copy.deepcopy(model)
        result = ns.compress_(m, config, example_inputs=ids)
        types = {r["type"] for r in result.summary.layers}
        assert "Conv1D" in types or config.backend == "fake"
        with torch.no_grad():
            assert sqnr_db(ref, m(ids, use_cache=False).logits) > 15
    m = copy.deepcopy(model)
    result = ns.compress_(m, PTQ(mode="dynamic", backend="onnxruntime"), example_inputs=ids)
    assert sqnr_db(ref, result.artifact(ids)) > 15  # exported with keyword inputs, no cache


class _NoExport(nn.Module):
    """A Linear model that neither ONNX (svdvals) nor torch.fx (data-dependent if) can take."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        y = self.fc(x)
        if y.sum() > 1e9:
            y = -y
        return y + torch.linalg.svdvals(y).sum()


def test_refused_models_are_left_bit_identical():
    model = _NoExport()
    x = torch.randn(4, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="backend='torch'"):
        ns.compress_(model, PTQ(mode="dynamic", backend="onnxruntime"), example_inputs=x)
    with pytest.raises(UnsupportedModelError, match="mode='dynamic'"):
        ns.compress_(model, PTQ(), example_inputs=x)
    assert type(model.fc) is nn.Linear
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert "nnshrink_int8" not in model.__dict__
    ns.compress_(model, PTQ(mode="dynamic"))  # the PyTorch kernels need no export
    assert isinstance(model.fc, Int8DynamicLinear)
