import torch
import torch.nn.functional as F
from torch import nn

from nnshrink.compact.graph import conv_uses
from nnshrink.models import create


class _Shapes(nn.Module):
    """Every way a conv's output can be read, one conv each."""

    def __init__(self):
        super().__init__()
        self.bn_relu = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.functional = nn.Conv2d(4, 4, 3, padding=1)  # F.relu, then a max-pool
        self.residual = nn.Conv2d(4, 4, 3, padding=1)  # added to its input before the ReLU
        self.twice = nn.Conv2d(4, 4, 3, padding=1)  # called twice
        self.leaky = nn.Conv2d(4, 4, 3, padding=1)  # not a ReLU
        self.head = nn.Conv2d(4, 2, 3, padding=1)  # its ReLU output is the model output

    def forward(self, x):
        x = torch.relu(self.bn(self.bn_relu(x)))
        x = F.max_pool2d(F.relu(self.functional(x)), 2)
        x = F.relu(self.residual(x) + x)
        x = self.twice(self.twice(x))
        x = F.leaky_relu(self.leaky(x))
        return F.relu(self.head(x))


def test_uses_of_every_reading_pattern():
    uses = conv_uses(_Shapes(), torch.randn(1, 1, 8, 8))
    assert (uses["bn_relu"].batchnorm, uses["bn_relu"].relu) == ("bn", True)
    assert uses["bn_relu"].readers == ["functional"]
    # read through the pool by `residual`, but the pooled map is also added back: not movable
    assert uses["functional"].relu and uses["functional"].readers is None
    assert uses["functional"].batchnorm is None
    assert not uses["residual"].relu and uses["residual"].readers is None
    assert uses["twice"].calls == 2 and not uses["twice"].relu
    assert not uses["leaky"].relu
    assert uses["head"].relu and uses["head"].readers is None  # the output's order is fixed


def test_a_second_reader_of_the_relu_output_that_is_not_a_conv_blocks_moving_the_order():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.b(y) + y

    uses = conv_uses(Branch(), torch.randn(1, 1, 6, 6))
    assert uses["a"].relu and uses["a"].readers is None


def test_zoo_models_and_frozen_parameters():
    vgg = create("vgg16", in_channels=1, input_size=28)
    for p in vgg.parameters():
        p.requires_grad_(False)  # the input still carries the graph
    uses = conv_uses(vgg, torch.zeros(1, 1, 28, 28))
    assert all(u.relu and u.batchnorm for u in uses.values()) and len(uses) == 13
    assert uses["features.3"].readers == ["features.7"]  # through the max-pool
    assert uses["features.40"].readers is None  # global pool, flatten, linear
    assert vgg.features[0].weight.grad is None
    resnet = create("resnet20", in_channels=1)
    uses = conv_uses(resnet, torch.zeros(1, 1, 28, 28))
    firsts = [n for n, u in uses.items() if u.relu and n.endswith("conv1") and "layer" in n]
    assert len(firsts) == 9
    assert all(uses[n].readers == [n[:-1] + "2"] for n in firsts)
    assert not any(u.relu for n, u in uses.items() if n.endswith("conv2"))
    assert resnet.training and vgg.training  # mode restored
