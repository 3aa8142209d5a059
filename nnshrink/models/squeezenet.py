"""SqueezeNet v1.1 (Iandola et al. 2016) with CIFAR-style strides for 32x32 / 28x28 inputs.

Same fire modules as the ImageNet v1.1 model (squeeze 1x1 → ReLU → expand 1x1 and 3x3,
concatenated, ReLU); the 3x3 stride-2 stem becomes a 3x3 stride-1 conv and the three max-pools
are 2x2, as usual for small images. The classifier is SqueezeNet's: dropout → 1x1 conv to
``num_classes`` → ReLU → global average pool.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model

# (squeeze, expand1x1, expand3x3) per fire module; "M" = 2x2 max-pool (v1.1 layout)
_FIRES = ("M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
          (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))  # fmt: skip


class Fire(nn.Module):
    """Fire module: squeeze 1x1 → ReLU → cat(expand 1x1, expand 3x3) → ReLU.

    Args:
        in_channels: input channels.
        squeeze: squeeze-layer channels (s1x1).
        expand1x1, expand3x3: channels of the two expand branches (output = their sum).
        batch_norm: BatchNorm after each conv (not in the paper; helps training from scratch).

    Example:
        >>> Fire(96, 16, 64, 64)(torch.zeros(1, 96, 8, 8)).shape
        torch.Size([1, 128, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        squeeze: int,
        expand1x1: int,
        expand3x3: int,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.squeeze_channels = in_channels, squeeze
        self.expand1x1_channels, self.expand3x3_channels = expand1x1, expand3x3
        self.batch_norm = batch_norm

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if batch_norm else nn.Identity()

        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.squeeze_bn = norm(squeeze)
        self.squeeze_relu = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand1x1_bn = norm(expand1x1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand3x3_bn = norm(expand3x3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_relu(self.squeeze_bn(self.squeeze(x)))
        out = torch.cat(
            [self.expand1x1_bn(self.expand1x1(s)), self.expand3x3_bn(self.expand3x3(s))], dim=1
        )
        return self.relu(out)


class SqueezeNet(nn.Module):
    """SqueezeNet v1.1 for small images."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.5,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, padding=1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(64))
        layers.append(nn.ReLU(inplace=True))
        channels = 64
        for item in _FIRES:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            squeeze, e1, e3 = item
            layers.append(Fire(channels, squeeze, e1, e3, batch_norm))
            channels = e1 + e3
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.conv_final = nn.Conv2d(channels, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # as in the reference implementation: the final conv starts small
                std = 0.01 if m is self.conv_final else None
                if std is None:
                    nn.init.kaiming_uniform_(m.weight)
                else:
                    nn.init.normal_(m.weight, 0.0, std)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv_final(self.dropout(self.features(x))))
        return self.flatten(self.pool(x))


@register_model("squeezenet")
def squeezenet(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    dropout: float = 0.5,
    batch_norm: bool = False,
) -> nn.Module:
    """SqueezeNet v1.1, CIFAR strides (727,626 params at 10 classes, 3 channels).

    Example:
        >>> from nnshrink.models import create
        >>> create("squeezenet", in_channels=3, input_size=32)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    del input_size  # global average pooling makes the model size-agnostic
    return SqueezeNet(num_classes, in_channels, dropout, batch_norm)
