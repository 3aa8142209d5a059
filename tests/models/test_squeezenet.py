import torch

from nnshrink.metrics import count_params
from nnshrink.models import create
from nnshrink.models.squeezenet import Fire, SqueezeNet


def test_imagenet_sized_head_has_squeezenet_v1_1_parameter_count():
    # torchvision's squeezenet1_1 has 1,235,496 parameters; the CIFAR strides change no weights
    assert count_params(SqueezeNet(num_classes=1000, in_channels=3)) == 1_235_496


def test_create_builds_for_cifar_and_mnist_shapes():
    model = create("squeezenet", in_channels=3, input_size=32).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert model.nnshrink_spec["name"] == "squeezenet"
    model = create("squeezenet", in_channels=1, input_size=28, batch_norm=True).eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_fire_concatenates_the_two_expand_branches():
    fire = Fire(8, 2, 3, 5)
    out = fire(torch.randn(1, 8, 4, 4))
    assert out.shape == (1, 8, 4, 4)
    assert (out >= 0).all()  # ends with ReLU
    assert count_params(fire) == (8 * 2 + 2) + (2 * 3 + 3) + (2 * 5 * 9 + 5)
