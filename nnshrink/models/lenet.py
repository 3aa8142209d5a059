"""LeNet-300-100, LeNet-5 (Caffe 20-50-500-10 variant, and the TWN paper's 32-64-512 variant) and a
configurable MLP."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .registry import register_model


def _mlp(
    in_features: int, widths: Sequence[int], num_classes: int, dropout: float
) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for width in widths:
        layers += [nn.Linear(prev, width), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


@register_model("lenet300")
def lenet300(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998), the fully connected net of Han et al. 2015 (266,610 params)."""
    return _mlp(in_channels * input_size * input_size, (300, 100), num_classes, 0.0)


@register_model("mlp")
def mlp(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    widths: Sequence[int] = (500, 300),
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Module:
    """Multi-layer perceptron with configurable hidden ``widths`` (BN after each hidden layer if asked).

    ``batch_norm=True`` gives the network-slimming MLP (Linear → BN → ReLU).
    """
    if not batch_norm:
        return _mlp(in_channels * input_size * input_size, widths, num_classes, dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_channels * input_size * input_size
    for width in widths:
        layers += [nn.Linear(prev, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        prev = width
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def _side_after_two_conv5_pools(input_size: int, name: str) -> int:
    """Feature-map side after two (5x5 conv, 2x2 max-pool) stages."""
    side = ((input_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"{name} needs input_size >= 16, got {input_size}")
    return side


class _FeaturesClassifier(nn.Module):
    """``classifier(features(x))``; subclasses build the two ``nn.Sequential`` parts."""

    features: nn.Sequential
    classifier: nn.Sequential

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5(_FeaturesClassifier):
    """Caffe's LeNet-5 variant used by Deep Compression: conv20-pool-conv50-pool-fc500-fc10."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        side = _side_after_two_conv5_pools(input_size, "lenet5")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5),
            nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(50 * side * side, 500),
            nn.ReLU(inplace=True),
            nn.Linear(500, num_classes),
        )


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    """LeNet-5, Caffe variant (431,080 params on 1x28x28)."""
    return LeNet5(num_classes, in_channels, input_size)


class LeNet5TWN(_FeaturesClassifier):
    """The LeNet-5 of the TWN paper (Li, Zhang, Liu 2016): 32-C5, MP2, 64-C5, MP2, 512-FC, 10.

    The paper lists "32-C5 + MP2 + 64-C5 + MP2 + 512FC + SVM" (99.41% float, 99.35% TWN on MNIST).
    Here each conv and the hidden FC are followed by batch norm and ReLU, as in the paper's other
    ternary networks, and the SVM output is a plain linear layer trained with cross-entropy.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        side = _side_after_two_conv5_pools(input_size, "lenet5-twn")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 512, bias=False),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )


@register_model("lenet5-twn")
def lenet5_twn(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> nn.Module:
    """LeNet-5 as in the TWN paper, 32-64-512 with batch norm (582,634 params on 1x28x28)."""
    return LeNet5TWN(num_classes, in_channels, input_size)
