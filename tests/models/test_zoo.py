"""Model zoo: published parameter counts, both input shapes, specs."""

from __future__ import annotations

import pytest
import torch

from nnshrink.metrics import count_macs, count_params
from nnshrink.models import create, input_kind, list_models, spec_of

# Published counts: Han et al. 2015 (LeNet-300-100 266K, LeNet-5 Caffe 431K), He et al. 2016
# option A (ResNet-20/32/56: 0.27M/0.46M/0.85M; exact values of the reference implementation),
# torchvision's MobileNetV2 at 1000 classes (3,504,872).
PUBLISHED = {
    "lenet300": ({}, 266_610),
    "lenet5": ({}, 431_080),
    "resnet20": ({"in_channels": 3, "input_size": 32}, 269_722),
    "resnet32": ({"in_channels": 3, "input_size": 32}, 464_154),
    "resnet56": ({"in_channels": 3, "input_size": 32}, 853_018),
    "mobilenetv2": ({"in_channels": 3, "num_classes": 1000}, 3_504_872),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_counts(name):
    kwargs, expected = PUBLISHED[name]
    assert count_params(create(name, **kwargs)) == expected


def test_vgg16_matches_li_et_al():
    # Li et al. 2017 (Pruning Filters): VGG-16 on CIFAR-10 has 1.5e7 params and 3.13e8 FLOPs
    # (they count multiply-adds).
    model = create("vgg16", in_channels=3, input_size=32)
    assert count_params(model) == pytest.approx(1.5e7, rel=0.02)
    assert count_macs(model, torch.zeros(1, 3, 32, 32)) == pytest.approx(3.13e8, rel=0.01)


@pytest.mark.parametrize("name", [n for n in list_models() if input_kind(n) == "image"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_runs_on_mnist_and_cifar_shapes(name, channels, size):
    model = create(name, in_channels=channels, input_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 10)


def test_resnet_option_b_has_projection_shortcuts():
    a = create("resnet20", in_channels=3)
    b = create("resnet20", in_channels=3, shortcut="B")
    assert count_params(b) > count_params(a)
    assert type(b.layer2[0].shortcut).__name__ == "Sequential"


def test_spec_recorded_and_errors():
    model = create("mlp", widths=(64, 32), dropout=0.1)
    assert spec_of(model) == {
        "name": "mlp",
        "kwargs": {"num_classes": 10, "in_channels": 1, "input_size": 28, "widths": [64, 32],
                   "dropout": 0.1},
    }  # fmt: skip
    with pytest.raises(KeyError, match="unknown model"):
        create("resnet18")
    with pytest.raises(TypeError, match="does not take"):
        create("lenet5", widths=(1,))


def test_option_a_shortcut_exports_a_static_pad():
    """The zero-pad shortcut must not put Shape/Gather ops in the ONNX graph (ORT int8 speed)."""
    import onnx

    from nnshrink.export import export_onnx

    model = create("resnet20", in_channels=3, input_size=32, shortcut="A").eval()
    x = torch.randn(2, 3, 32, 32)
    graph = onnx.load_from_string(export_onnx(model, x)).graph
    ops = {node.op_type for node in graph.node}
    assert "Pad" in ops and not ops & {"Shape", "Gather"}


def test_lenet5_twn_has_the_papers_widths():
    # TWN paper: 32-C5 + MP2 + 64-C5 + MP2 + 512FC (+ a 10-way output)
    model = create("lenet5-twn")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(32, (5, 5)), (64, (5, 5))]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(64 * 4 * 4, 512), (512, 10)]
