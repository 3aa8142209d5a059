"""MobileNetV2 (Sandler et al. 2018) with CIFAR-style strides for 32x32 / 28x28 inputs.

Same layers as the ImageNet model (3,504,872 params at 1000 classes); only the stem stride and the
first stride-2 stage use stride 1, as is usual for CIFAR.
"""

from __future__ import annotations

from torch import nn

from .registry import register_model

# expansion t, output channels c, repeats n, stride s (ImageNet strides 2 changed to 1 where noted)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1, act: bool = True):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand 1x1 → depthwise 3x3 → project 1x1 (linear), residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, 1, act=False),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2, width 1.0, CIFAR strides."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(in_channels, 32, 3, 1)]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


@register_model("mobilenetv2")
def mobilenetv2(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32, dropout: float = 0.2
) -> nn.Module:
    """MobileNetV2 for small images (2,236,682 params at 10 classes, 3 channels)."""
    del input_size  # global average pooling makes the model size-agnostic
    return MobileNetV2(num_classes, in_channels, dropout)
