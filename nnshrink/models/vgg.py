"""CIFAR-style VGG-16 with batch norm (as in Li et al. 2017, 'Pruning Filters')."""

from __future__ import annotations

from torch import nn

from .registry import register_model

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with BN; max-pools that would shrink the map below 1x1 are skipped (28x28 inputs)."""

    def __init__(self, cfg, num_classes: int = 10, in_channels: int = 3, input_size: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, input_size
        for item in cfg:
            if item == "M":
                if side >= 2:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
                continue
            layers += [
                nn.Conv2d(channels, item, 3, padding=1, bias=False),
                nn.BatchNorm2d(item),
                nn.ReLU(inplace=True),
            ]
            channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


@register_model("vgg16")
def vgg16(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """VGG-16-BN for 32x32 (or 28x28) inputs, one linear classifier (~14.7M params)."""
    return VGG(_VGG16, num_classes, in_channels, input_size)
