import torch
from torch import nn

from nnshrink.quantization import PTQ
from nnshrink.quantization.select import (
    disable_fused_fast_paths,
    layer_bits,
    quantizable_layers,
)


def test_attention_projections_are_skipped_with_a_reason():
    model = nn.ModuleDict({"attn": nn.MultiheadAttention(8, 2), "fc": nn.Linear(8, 2),
                           "conv": nn.Conv2d(1, 2, 3)})  # fmt: skip
    layers, skipped = quantizable_layers(model, PTQ(), convs=False)
    assert [layer.name for layer in layers] == ["fc"]
    assert "in_proj_weight" in skipped["attn.out_proj"]
    layers, _ = quantizable_layers(model, PTQ(exclude=("@linear",)))
    assert [layer.name for layer in layers] == ["conv"]


def test_per_layer_bits_are_checked():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    layers, _ = quantizable_layers(model, PTQ(mode="weight-only", per_layer={"1": 4}))
    assert [layer_bits(x, PTQ(mode="weight-only"), (8, 4)) for x in layers] == [8, 4]


def test_fast_paths_are_switched_off_only_above_replaced_layers():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    model = nn.ModuleDict({"enc": nn.TransformerEncoder(layer, 2), "other": copy_layer(layer)})
    touched = disable_fused_fast_paths(model, ["enc.layers.1.linear1"])
    assert touched == ["enc", "enc.layers.1"]
    assert model["enc"].layers[0].activation_relu_or_gelu  # untouched: nothing replaced there
    assert model["other"].activation_relu_or_gelu
    x = torch.randn(1, 3, 8)
    model.eval()
    with torch.no_grad():
        assert model["enc"](x).shape == x.shape


def copy_layer(layer):
    import copy

    return copy.deepcopy(layer)
